// Delivers events to the user's callback on one dispatcher thread, so stage threads never wait for the
// callback (or for Python's GIL). Nothing is dropped: the queue is unbounded.
#pragma once

#include <functional>
#include <thread>

#include "pipeline/events.h"
#include "pipeline/queue.h"

namespace omni {

class EventSink {
public:
    // `before` and `after` run on the dispatcher thread around the callback of each event.
    EventSink(EventCallback callback, std::function<void(const Event &)> before,
              std::function<void(const Event &)> after);
    ~EventSink();  // delivers what is queued, then joins
    EventSink(const EventSink &) = delete;
    EventSink & operator=(const EventSink &) = delete;

    void push(Event event);
    bool on_dispatcher_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

private:
    void run();

    EventCallback callback_;
    std::function<void(const Event &)> before_;
    std::function<void(const Event &)> after_;
    BlockingQueue<Event> queue_;
    std::thread thread_;
};

}  // namespace omni

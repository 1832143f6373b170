#include "pipeline/event_sink.h"

#include <exception>

#include "core/log.h"

namespace omni {

const char * to_string(EventType type) {
    switch (type) {
        case EventType::text: return "text";
        case EventType::tts_chunk: return "tts_chunk";
        case EventType::audio: return "audio";
        case EventType::listen: return "listen";
        case EventType::error: return "error";
        case EventType::stats: return "stats";
        case EventType::end_of_turn: return "end_of_turn";
    }
    return "unknown";
}

EventSink::EventSink(EventCallback callback, std::function<void(const Event &)> before,
                     std::function<void(const Event &)> after)
    : callback_(std::move(callback)),
      before_(std::move(before)),
      after_(std::move(after)),
      thread_([this] { run(); }) {}

EventSink::~EventSink() {
    queue_.close();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void EventSink::push(Event event) {
    queue_.push(std::move(event));
}

void EventSink::run() {
    while (auto event = queue_.pop()) {
        if (before_) before_(*event);
        try {
            if (callback_) callback_(*event);
        } catch (const std::exception & e) {
            log_message(LogLevel::error, std::string("event callback raised: ") + e.what());
        }
        if (after_) after_(*event);
    }
}

}  // namespace omni

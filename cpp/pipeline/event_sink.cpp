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

EventSink::EventSink(EventCallback callback, std::function<void(const Event &)> delivered)
    : callback_(std::move(callback)), delivered_(std::move(delivered)), thread_([this] { run(); }) {}

EventSink::~EventSink() {
    queue_.close();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void EventSink::push(Event event) { queue_.push(std::move(event)); }

void EventSink::run() {
    while (auto event = queue_.pop()) {
        try {
            if (callback_) callback_(*event);
        } catch (const std::exception & e) {
            log_message(LogLevel::error, std::string("event callback raised: ") + e.what());
        }
        if (delivered_) delivered_(*event);
    }
}

}  // namespace omni

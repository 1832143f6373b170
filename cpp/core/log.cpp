#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "llama.h"

namespace omni {
namespace {

struct LogState {
    std::mutex mutex;
    LogSink sink;
    std::atomic<int> min_level{static_cast<int>(LogLevel::info)};
    std::atomic<int> expected_aborts{0};
};

LogState & log_state() {
    static LogState state;
    return state;
}

LogLevel from_ggml(ggml_log_level level) {
    switch (level) {
        case GGML_LOG_LEVEL_ERROR: return LogLevel::error;
        case GGML_LOG_LEVEL_WARN: return LogLevel::warn;
        case GGML_LOG_LEVEL_INFO: return LogLevel::info;
        default: return LogLevel::debug;
    }
}

void llama_log_trampoline(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (level == GGML_LOG_LEVEL_CONT) {
        level = GGML_LOG_LEVEL_DEBUG;
    }
    std::string message(text ? text : "");
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
        message.pop_back();
    }
    if (!message.empty()) {
        // libllama's chatter is debug for us, except warnings and errors.
        LogLevel ours = from_ggml(level);
        if (ours == LogLevel::info || log_state().expected_aborts.load() > 0) {
            ours = LogLevel::debug;
        }
        log_message(ours, "llama.cpp: " + message);
    }
}

}  // namespace

const char * log_level_name(LogLevel level) {
    switch (level) {
        case LogLevel::debug: return "debug";
        case LogLevel::info: return "info";
        case LogLevel::warn: return "warning";
        case LogLevel::error: return "error";
    }
    return "info";
}

void set_log_sink(LogSink sink) {
    LogState & state = log_state();
    std::lock_guard<std::mutex> lock(state.mutex);
    state.sink = std::move(sink);
}

void set_log_min_level(LogLevel level) {
    log_state().min_level = static_cast<int>(level);
}

void log_message(LogLevel level, const std::string & message) {
    LogState & state = log_state();
    if (static_cast<int>(level) < state.min_level.load()) {
        return;
    }
    LogSink sink;
    {
        std::lock_guard<std::mutex> lock(state.mutex);
        sink = state.sink;
    }
    if (sink) {
        sink(level, message);
    } else if (level >= LogLevel::warn) {
        std::fprintf(stderr, "omni_engine %s: %s\n", log_level_name(level), message.c_str());
    }
}

void begin_expected_abort() {
    ++log_state().expected_aborts;
}

void end_expected_abort() {
    --log_state().expected_aborts;
}

void route_llama_logs() {
    static std::once_flag once;
    std::call_once(once, [] { llama_log_set(llama_log_trampoline, nullptr); });
}

}  // namespace omni

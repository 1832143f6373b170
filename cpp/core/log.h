// The engine's one logger. llama.cpp/ggml logs are routed here too. The sink is process-wide because
// llama.cpp's own log hook is process-wide; everything else in the engine is per instance.
#pragma once

#include <functional>
#include <string>

namespace omni {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

using LogSink = std::function<void(LogLevel, const std::string &)>;

// Replaces the sink (nullptr restores the default: warnings and errors to stderr).
void set_log_sink(LogSink sink);
// Messages below this level are dropped before they reach the sink.
void set_log_min_level(LogLevel level);
void log_message(LogLevel level, const std::string & message);

const char * log_level_name(LogLevel level);

// While an evaluation is being aborted on purpose, llama.cpp reports the abort as errors; those are
// demoted to debug between these calls.
void begin_expected_abort();
void end_expected_abort();

// Installs the routing of llama.cpp/ggml log output into log_message (idempotent).
void route_llama_logs();

}  // namespace omni

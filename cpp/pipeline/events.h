// Events a turn produces, in the order the client receives them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace omni {

enum class EventType { text, tts_chunk, audio, listen, error, stats, end_of_turn };

const char * to_string(EventType type);

struct TurnStats {
    int prefill_tokens = 0;
    double prefill_ms = 0.0;
    double ttft_ms = -1.0;  // generate() to the first text; -1 if no text
    int decode_tokens = 0;
    double decode_ms = 0.0;
    double total_ms = 0.0;
    double tokens_per_s() const { return decode_ms > 0.0 ? decode_tokens * 1000.0 / decode_ms : 0.0; }
};

struct Event {
    EventType type = EventType::text;
    int turn = 0;
    std::string text;          // text, tts_chunk
    std::string reason;        // end_of_turn: eos | max_tokens | stop | break | context_full | error
    std::string message;       // error
    TurnStats stats;           // stats
    int n_speech_tokens = 0;   // tts_chunk
    int chunk_idx = 0;         // tts_chunk
    std::vector<int16_t> pcm;  // audio, 24 kHz mono
    int n_input_tokens = 0;    // audio
};

inline Event text_event(int turn, std::string text) {
    Event e;
    e.type = EventType::text;
    e.turn = turn;
    e.text = std::move(text);
    return e;
}

inline Event error_event(int turn, std::string message) {
    Event e;
    e.type = EventType::error;
    e.turn = turn;
    e.message = std::move(message);
    return e;
}

inline Event stats_event(int turn, const TurnStats & stats) {
    Event e;
    e.type = EventType::stats;
    e.turn = turn;
    e.stats = stats;
    return e;
}

inline Event end_of_turn_event(int turn, std::string reason) {
    Event e;
    e.type = EventType::end_of_turn;
    e.turn = turn;
    e.reason = std::move(reason);
    return e;
}

using EventCallback = std::function<void(const Event &)>;

}  // namespace omni

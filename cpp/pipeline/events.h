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
    int speech_tokens = 0;          // speech codes the TTS drew for the turn
    double tts_ms = 0.0;            // time the TTS spent on them
    double first_speech_ms = -1.0;  // generate() to the first group of 25 codes; -1 if none
    int audio_samples = 0;          // 24 kHz samples of the turn's audio events
    double token2wav_ms = 0.0;      // time Token2Wav spent on them
    double first_audio_ms = -1.0;   // generate() to the first audio event; -1 if none
    double tokens_per_s() const { return decode_ms > 0.0 ? decode_tokens * 1000.0 / decode_ms : 0.0; }
};

struct Event {
    EventType type = EventType::text;
    int turn = 0;
    std::string text;                // text, tts_chunk
    std::string reason;              // end_of_turn: eos | max_tokens | stop | break | context_full | error
    std::string message;             // error
    TurnStats stats;                 // stats
    int n_speech_tokens = 0;         // tts_chunk
    int chunk_idx = 0;               // tts_chunk
    std::vector<int> speech_tokens;  // tts_chunk: the chunk's speech codes
    std::vector<int16_t> pcm;        // audio, 24 kHz mono
    int n_input_tokens = 0;          // audio
};

inline Event text_event(int turn, std::string text) {
    Event e;
    e.type = EventType::text;
    e.turn = turn;
    e.text = std::move(text);
    return e;
}

inline Event tts_chunk_event(int turn, std::string text, std::vector<int> codes, int chunk_idx) {
    Event e;
    e.type = EventType::tts_chunk;
    e.turn = turn;
    e.text = std::move(text);
    e.n_speech_tokens = static_cast<int>(codes.size());
    e.speech_tokens = std::move(codes);
    e.chunk_idx = chunk_idx;
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

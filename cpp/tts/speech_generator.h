// One turn of simplex speech (pipeline.md §7, with the PyTorch reference's semantics): text chunks with their
// LLM hidden states in, speech codes out, the TTS KV cache kept across the chunks of a turn. Also the two
// hand-off helpers around it: which LLM tokens the TTS is given, and the 25-code groups for Token2Wav.
#pragma once

#include <functional>
#include <vector>

#include "tts/speech_sampler.h"
#include "tts/tts_model.h"

namespace omni {

constexpr int kTtsAudioBos = 151687;  // emb_text row ending every condition (the LLM's <focus>)
constexpr int kTtsTextEos = 151692;   // emb_text row marking the last text chunk (the LLM's </perception>)
constexpr int kTtsChunkTokens = 10;   // TTS-valid LLM tokens per text chunk
constexpr int kSpeechGroup = 25;      // speech codes per hand-off to Token2Wav (1 s of audio)

// Whether an LLM token is part of the TTS condition (special/think tokens and "\n\n" are not).
bool is_tts_valid(int token);

// Releases speech codes in groups of exactly `group_size`, carrying the remainder to the next push.
class SpeechTokenGrouper {
public:
    explicit SpeechTokenGrouper(int group_size = kSpeechGroup);
    std::vector<std::vector<int>> push(const std::vector<int> & codes);
    std::vector<int> flush();  // the remainder (< group_size), possibly empty
    int pending() const { return static_cast<int>(pending_.size()); }
    void clear() { pending_.clear(); }

private:
    int group_size_;
    std::vector<int> pending_;
};

class SpeechGenerator {
public:
    SpeechGenerator(Tts & tts, const TtsSamplingParams & params);

    // Clears the TTS KV cache and the code history; the next code drawn is the turn's first.
    void start_turn();
    // Conditions on one text chunk (ids with their LLM hidden rows, n x n_llm_embd) and draws codes until the
    // speech EOS (never returned or fed) or max_tokens_per_chunk. `cancelled` is polled before every draw.
    std::vector<int> speak_chunk(const std::vector<int> & ids, const float * hidden, bool last,
                                 const std::function<bool()> & cancelled = {});
    int position() const { return tts_.n_past(); }
    const Tts & tts() const { return tts_; }
    const TtsSamplingParams & params() const { return sampler_.params(); }

private:
    std::vector<float> condition_rows(const std::vector<int> & ids, const float * hidden, bool last);

    Tts & tts_;
    SpeechSampler sampler_;
    std::vector<int> history_;
    bool first_ = true;
};

}  // namespace omni

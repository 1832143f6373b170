// The speech-token sampler of the PyTorch simplex TTS (pipeline.md §7.3): temperature, a count-based repetition
// penalty over the newest tokens, then top-p and top-k (both keeping at least min_keep), then a multinomial draw.
// The first speech token of a turn is drawn with the temperature alone.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace omni {

struct TtsSamplingParams {
    float temperature = 0.8f;  // <= 0: greedy (argmax of the processed logits)
    float repetition_penalty = 1.05f;
    int penalty_window = 16;
    float top_p = 0.85f;  // >= 1: off
    int top_k = 25;       // <= 0: off
    int min_keep = 3;
    int max_tokens_per_chunk = 500;
    int64_t seed = -1;  // -1: random
};

// Throws StateError naming the field when a parameter is out of range.
void validate(const TtsSamplingParams & params);

class SpeechSampler {
public:
    explicit SpeechSampler(const TtsSamplingParams & params);

    // The deterministic part: the logits after temperature, penalty and truncation (removed entries are -inf).
    std::vector<float> process(const std::vector<float> & logits, const std::vector<int> & history, bool first) const;
    // Inverse-CDF draw: the first index whose cumulative softmax probability exceeds u (0 <= u < 1).
    static int choose(const std::vector<float> & processed, double u);
    int sample(const std::vector<float> & logits, const std::vector<int> & history, bool first);

    const TtsSamplingParams & params() const { return params_; }

private:
    void apply_penalty(std::vector<float> & logits, const std::vector<int> & history) const;
    bool apply_top_p_then_k_fast(std::vector<float> & logits) const;
    void apply_top_p(std::vector<float> & logits) const;
    void apply_top_k(std::vector<float> & logits) const;

    TtsSamplingParams params_;
    std::mt19937_64 rng_;
};

}  // namespace omni

// The reference text sampler (pipeline.md §6.1, PyTorch simplex streaming path):
// forbid -> repetition penalty -> length penalty on terminators -> temperature -> top-k -> top-p -> min-p
// -> multinomial. Greedy (argmax after the penalties) when temperature <= 0.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "llm/llm.h"

namespace omni {

struct SamplingParams {
    float temperature = 0.7f;
    int top_k = 100;
    float top_p = 0.8f;
    float min_p = 0.0f;
    float repetition_penalty = 1.02f;
    int repetition_window = 128;
    float length_penalty = 1.0f;
    int64_t seed = -1;  // -1: random
};

// Throws StateError naming the field when a parameter is out of range.
void validate(const SamplingParams & params);

class Sampler {
public:
    explicit Sampler(const SamplingParams & params);

    // The deterministic part: returns the final probability of every token (0 where cut).
    std::vector<float> probabilities(const std::vector<float> & logits, const std::vector<Token> & history,
                                     const std::vector<Token> & terminators,
                                     const std::vector<Token> & forbidden) const;
    Token sample(const std::vector<float> & logits, const std::vector<Token> & history,
                 const std::vector<Token> & terminators, const std::vector<Token> & forbidden);

    const SamplingParams & params() const { return params_; }

private:
    // The surviving tokens, best first, with their probabilities (what both public methods build on).
    struct Candidates {
        std::vector<int> ids;
        std::vector<double> probs;
    };
    Candidates candidates(const std::vector<float> & logits, const std::vector<Token> & history,
                          const std::vector<Token> & terminators, const std::vector<Token> & forbidden) const;
    std::vector<float> penalised_logits(const std::vector<float> & logits, const std::vector<Token> & history,
                                        const std::vector<Token> & terminators,
                                        const std::vector<Token> & forbidden) const;

    SamplingParams params_;
    std::mt19937_64 rng_;
};

}  // namespace omni

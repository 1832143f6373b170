// prompt_cache.gguf (token2wav.md §6): the speaker vector and the four flow stream caches after the reference's
// setup_cache on the prompt voice, in the ggml layouts of that table, kept in host memory so every stream can
// start from them again.
#pragma once

#include <string>
#include <vector>

#include "token2wav/flow_weights.h"

namespace omni {

struct PromptCache {
    int n_timesteps = 0;
    float temperature = 1.0f;
    int conformer_frames = 0;          // L of the conformer cache (mel rate; token layers hold L / 2 tokens twice)
    int estimator_frames = 0;          // L of the estimator cache
    std::vector<float> spk;            // spk_cb, before normalisation
    std::vector<float> conformer_cnn;  // [width, 6]
    std::vector<float> conformer_att;  // [2 * head_dim, L, heads, layers]
    std::vector<float> estimator_cnn;  // [2 * hidden, 2, depth * NT, 2 rows]
    std::vector<float> estimator_att;  // [2 * head_dim, L, heads * depth * NT, 2 rows]
};

// Reads and checks the file against the flow's sizes; ModelFileError names the file, key or tensor.
PromptCache load_prompt_cache(const std::string & path, const FlowWeights & flow);

}  // namespace omni

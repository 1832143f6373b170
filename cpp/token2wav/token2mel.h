// Speech tokens -> mel frames, streamed (token2wav.md §3.3-3.6, §5.2-5.3): the token encoder with its conv and
// attention caches, then NT Euler steps of the DiT velocity estimator with classifier-free guidance (a batch of
// two rows) and per-step attention/conv caches. One ggml graph runs a whole window (encoder + every step); the
// caches live on the backend and the graph appends to (and trims) them in place.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/compute.h"
#include "token2wav/flow_weights.h"
#include "token2wav/prompt_cache.h"

struct ggml_context;
struct ggml_cgraph;
struct ggml_tensor;
struct ggml_backend;
struct ggml_backend_buffer;

namespace omni {

struct Token2MelOptions {
    std::string folder;  // encoder.gguf, flow_matching.gguf, flow_extra.gguf, prompt_cache.gguf
    bool use_gpu = false;
    int n_threads = 0;
    int n_timesteps = 0;  // 0: the prompt cache's value; otherwise it must equal it
    uint64_t noise_seed = 0;
};

// The four stream caches in the reference's PyTorch layouts (row-major, shapes in the comments).
struct FlowCaches {
    std::vector<float> conformer_cnn;  // (1, width, 6)
    std::vector<float> conformer_att;  // (layers, 1, heads, L, 2 * head_dim), token layers packed [c ; c]
    std::vector<float> estimator_cnn;  // (NT, depth, 2, 2 * hidden, 2)
    std::vector<float> estimator_att;  // (NT, depth, 2, heads, L_est, 2 * head_dim), newest first
};

// Where a window's cache rows go: rows [keep_from, total) of [cached rows ; window rows] land at row `dst`.
struct CacheUpdate {
    int cached = 0;
    int total = 0;
    int keep_from = 0;
    int dst = 0;
    int new_length() const { return dst + total - keep_from; }
};

// The sizes that shape the caches (read from the files).
struct Token2MelSizes {
    int width = 0, n_layers = 0, n_heads = 0, head_dim = 0, conv_cache_frames = 0;
    int depth = 0, hidden = 0, dit_heads = 0, dit_head_dim = 0;
};

class Token2Mel {
public:
    static constexpr int kSilenceToken = 4218;
    static constexpr int kChunkTokens = 25;     // new tokens per streaming window (its mel: 2 frames each)
    static constexpr int kNoiseFrames = 30000;  // the reference's rand_noise length (600 s at 50 Hz)
    static constexpr int kKeptTokens = 50;      // generated tokens kept by the conformer trim
    static constexpr int kKeptFrames = 100;     // generated mel frames kept by both trims

    explicit Token2Mel(const Token2MelOptions & options);
    ~Token2Mel();
    Token2Mel(const Token2Mel &) = delete;
    Token2Mel & operator=(const Token2Mel &) = delete;

    int n_timesteps() const { return n_timesteps_; }
    Token2MelSizes sizes() const;
    int n_mels() const { return weights_->n_mels(); }
    int n_tokens() const { return weights_->n_tokens(); }
    int lookahead() const { return weights_->encoder().lookahead; }
    int max_window() const { return max_window_; }
    int prompt_frames() const { return prompt_.estimator_frames; }
    int conformer_length() const { return 2 * token_len_; }
    int estimator_length() const { return est_len_; }
    const std::string & backend_name() const { return backend_->name(); }
    // The fixed CFM noise, n_mels x kNoiseFrames, row-major (the reference's rand_noise[0]).
    const std::vector<float> & noise() const { return noise_; }

    // Back to the prompt caches: the start of a stream.
    void reset();
    // One window: mel (n_mels x frames, channel-major) for tokens[0 : n - lookahead] (all n tokens when `last`).
    std::vector<float> feed(const std::vector<int> & tokens, bool last);
    FlowCaches caches() const;

private:
    struct WindowGraph;
    struct CacheTensors {
        ggml_tensor * conv = nullptr;             // [width, 6]: pre-lookahead tail | upsample tail
        std::vector<ggml_tensor *> enc_k, enc_v;  // per layer [width, capacity]
        ggml_tensor * est_conv = nullptr;         // [2 * hidden, 2, slots, 2 rows]
        std::vector<ggml_tensor *> est_k, est_v;  // per slot [head_dim, capacity, heads, 2 rows]
    };

    void check_tokens(const std::vector<int> & tokens, bool last) const;
    size_t max_graph_nodes() const;
    void allocate_caches();
    void precompute_modulation();
    void compute_speaker();
    ggml_cgraph * build_window(ggml_context * ctx, WindowGraph & g, int n_tokens, bool last);
    ggml_tensor * build_encoder(ggml_context * ctx, ggml_cgraph * graph, WindowGraph & g, int n_tokens, bool last);
    ggml_tensor * build_conformer(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, size_t layer,
                                  const ConformerLayerWeights & w, ggml_tensor * pos, int cached, int keep_from,
                                  int keep_to);
    ggml_tensor * build_dit(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, ggml_tensor * cond_rows, int step,
                            const CacheUpdate & plan);
    ggml_tensor * build_dit_block(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, int step, int block,
                                  const CacheUpdate & plan);

    std::unique_ptr<Backend> backend_;
    std::unique_ptr<FlowWeights> weights_;
    std::unique_ptr<GraphRunner> runner_;
    PromptCache prompt_;
    int n_timesteps_ = 0;
    int max_window_ = 0;
    bool on_cpu_ = true;  // ggml's CPU GELU is tabulated in F16: spell the formula out there
    std::vector<float> noise_;
    std::vector<float> t_schedule_;  // t at each step (float32 accumulation like the reference)
    std::vector<float> dt_schedule_;

    ggml_context * own_ctx_ = nullptr;
    ggml_backend_buffer * own_buffer_ = nullptr;
    CacheTensors cache_;
    ggml_tensor * modulation_ = nullptr;        // [9 * hidden, depth, NT]: shift, 1 + scale, gate per part
    ggml_tensor * final_modulation_ = nullptr;  // [2 * hidden, NT]
    ggml_tensor * speaker_ = nullptr;           // [n_mels]: the projected speaker vector
    int enc_capacity_ = 0;
    int est_capacity_ = 0;
    int token_len_ = 0;            // tokens in the token-rate conformer caches
    int est_len_ = 0;              // frames in each estimator cache
    std::vector<int> est_chunks_;  // frames each generated chunk left in the estimator cache, oldest first
};

}  // namespace omni

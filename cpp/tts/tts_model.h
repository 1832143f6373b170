// The TTS stage's model: the official TTS GGUF (model-files.md §6) and projector GGUF (§7), the 20-layer
// Llama-architecture transformer as our own ggml graph with its own KV cache, the condition built from LLM
// tokens and hidden states, and the speech-code head. Stock libllama refuses the file (11 extra tensors).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/compute.h"
#include "core/weights.h"

struct ggml_context;
struct ggml_cgraph;
struct ggml_tensor;
struct ggml_backend_buffer;

namespace omni {

struct TtsOptions {
    std::string path;
    std::string projector_path;  // "": use projector_semantic.* from the TTS file
    bool use_gpu = false;
    int n_threads = 0;
    int n_ctx = 0;  // KV cache positions; 0: llama.context_length of the file
};

class Tts {
public:
    explicit Tts(const TtsOptions & options);
    ~Tts();
    Tts(const Tts &) = delete;
    Tts & operator=(const Tts &) = delete;

    int n_embd() const { return n_embd_; }
    int n_llm_embd() const { return n_llm_embd_; }
    int n_layer() const { return n_layer_; }
    int n_head() const { return n_head_; }
    int n_codes() const { return n_codes_; }
    int eos_code() const { return n_codes_ - 1; }
    int n_text() const { return n_text_; }
    int n_ctx() const { return n_ctx_; }
    int n_past() const { return n_past_; }
    const std::string & backend_name() const { return backend_->name(); }
    const std::string & projector_source() const { return projector_source_; }
    const std::string & path() const { return path_; }

    // Rows of emb_text / emb_code.0 (n_embd floats each); StateError for an id out of range.
    const float * text_row(int id) const;
    const float * code_row(int code) const;
    // emb_text[id] + L2-normalised projector_semantic(hidden) for n (id, hidden row) pairs: n x n_embd.
    std::vector<float> condition(const std::vector<int> & ids, const float * hidden);
    // Empties the KV cache.
    void clear() { n_past_ = 0; }
    // Runs n input rows at positions n_past .. n_past+n-1 and keeps their keys/values; returns the speech-code
    // logits of the last row (n_codes) or of every row (n x n_codes). StateError when the cache is full.
    std::vector<float> forward(const float * rows, int n, bool all_logits = false);

private:
    struct Layer {
        ggml_tensor *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *gate, *up, *down;
    };
    struct Projector {
        ggml_tensor *w1, *b1, *w2, *b2;
    };

    void read_hyperparameters(const GgufFile & meta);
    void load_projector(const TtsOptions & options);
    void load_head_code();
    void allocate_cache();
    void reserve_compute();
    // The graph's inputs and output, for n rows after n_past cached positions.
    struct ForwardGraph {
        ggml_cgraph * graph = nullptr;
        ggml_tensor *input = nullptr, *positions = nullptr, *mask = nullptr, *logits = nullptr;
    };
    ForwardGraph build_forward(ggml_context * ctx, int n_past, int n, bool all_logits);
    ggml_tensor * with_past(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * fresh, ggml_tensor * cache,
                            int n_past);
    ggml_tensor * build_layer(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, size_t index,
                              ggml_tensor * positions, ggml_tensor * mask, int n_past, int n);

    std::string path_;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<WeightFile> weights_;
    std::unique_ptr<WeightFile> projector_file_;
    std::unique_ptr<GraphRunner> runner_;
    std::string projector_source_;
    int n_embd_ = 0;
    int n_layer_ = 0;
    int n_head_ = 0;
    int n_head_kv_ = 0;
    int head_dim_ = 0;
    int n_rot_ = 0;
    int n_ff_ = 0;
    int n_llm_embd_ = 0;
    int n_codes_ = 0;
    int n_text_ = 0;
    int n_ctx_ = 0;
    int n_ctx_train_ = 0;
    float rope_base_ = 10000.0f;
    float rms_eps_ = 1e-6f;
    int n_past_ = 0;
    std::vector<Layer> layers_;
    Projector projector_{};
    ggml_tensor * output_norm_ = nullptr;
    const HostTensor * emb_text_ = nullptr;
    const HostTensor * emb_code_ = nullptr;
    // Weights and caches the stage creates itself: the head in matmul layout, and per-layer K and V caches
    // (a row per position).
    ggml_context * own_ctx_ = nullptr;
    ggml_backend_buffer * own_buffer_ = nullptr;
    ggml_tensor * head_ = nullptr;  // (n_embd, n_codes)
    std::vector<ggml_tensor *> k_cache_;
    std::vector<ggml_tensor *> v_cache_;
};

}  // namespace omni

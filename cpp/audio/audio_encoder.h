// The audio stage: the official audio GGUF (model-files.md §5), the mel frontend, the Whisper-style encoder,
// the projector (Linear, ReLU, Linear) and AvgPool(5): 16 kHz PCM in, LLM embedding rows out (10 per second).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "audio/mel.h"
#include "core/compute.h"
#include "core/weights.h"

struct ggml_context;
struct ggml_tensor;
struct ggml_backend_buffer;

namespace omni {

struct AudioEncoderOptions {
    std::string path;
    bool use_gpu = false;
    int n_threads = 0;
};

struct AudioRows {
    std::vector<float> data;  // n_rows x n_embd, row-major
    int n_rows = 0;
};

class AudioEncoder {
public:
    explicit AudioEncoder(const AudioEncoderOptions & options);
    ~AudioEncoder();

    int n_embd_out() const { return n_out_; }
    int n_mel() const { return n_mel_; }
    int max_positions() const { return n_positions_; }
    const std::string & backend_name() const { return backend_->name(); }

    // Normalised log-mel of a whole clip, row-major [mel][frame].
    std::vector<float> mel(const float * pcm, size_t n_samples, int * n_frames) const;
    // Encoder + projector + pool of a mel (n_mel x n_frames); clips longer than the position table are encoded
    // in consecutive windows of 2 x positions frames, each from position 0, as the reference chat path does.
    AudioRows encode_mel(const float * mel, int n_frames);
    AudioRows encode(const float * pcm, size_t n_samples);

    // Streaming (the PyTorch reference's encoder cache, pipeline.md §4.2): each chunk's mel and conv stem are
    // computed alone; its positions continue after the frames cached since the last reset, and every layer
    // attends over the cached keys/values plus the chunk's own. The cache is reset before a chunk that would
    // reach the position table's end, and by reset_stream().
    AudioRows encode_chunk(const float * pcm, size_t n_samples);
    AudioRows encode_chunk_mel(const float * mel, int n_frames);
    void reset_stream() { cached_ = 0; }
    int cached_positions() const { return cached_; }

private:
    struct Layer {
        ggml_tensor *attn_ln_w, *attn_ln_b, *q_w, *q_b, *k_w, *v_w, *v_b, *o_w, *o_b;
        ggml_tensor *mlp_ln_w, *mlp_ln_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    };

    // Where a graph's positions start and whether its layers read and extend the stream cache.
    struct Window {
        int offset = 0;
        bool cached = false;
        std::vector<ggml_tensor *> * cache_writes = nullptr;
    };

    void load_tensors();
    void allocate_cache();
    AudioRows encode_window(const float * mel, int n_mel_total_frames, int first_frame, int n_frames, bool cached);
    ggml_tensor * build_encoder(ggml_context * ctx, ggml_tensor * mel, int n_frames, const Window & window);
    ggml_tensor * build_layer(ggml_context * ctx, ggml_tensor * x, size_t index, int n_positions,
                              const Window & window);
    ggml_tensor * with_cache(ggml_context * ctx, ggml_tensor * fresh, ggml_tensor * cache, const Window & window);

    std::unique_ptr<Backend> backend_;
    std::unique_ptr<WeightFile> weights_;
    std::unique_ptr<MelFrontend> mel_;
    std::unique_ptr<GraphRunner> runner_;
    int n_embd_ = 0;
    int n_head_ = 0;
    int n_layer_ = 0;
    int n_ff_ = 0;
    int n_mel_ = 80;
    int n_positions_ = 1500;
    int n_mid_ = 0;
    int n_out_ = 0;
    ggml_tensor *conv1_w_, *conv1_b_, *conv2_w_, *conv2_b_, *positions_, *ln_post_w_, *ln_post_b_;
    ggml_tensor *proj1_w_, *proj1_b_, *proj2_w_, *proj2_b_;
    std::vector<Layer> layers_;
    ggml_context * cache_ctx_ = nullptr;
    ggml_backend_buffer * cache_buffer_ = nullptr;
    std::vector<ggml_tensor *> k_cache_;  // per layer, (d, positions) F32
    std::vector<ggml_tensor *> v_cache_;
    int cached_ = 0;
};

}  // namespace omni

#include "audio/audio_encoder.h"

#include <algorithm>
#include <cmath>

#include "core/errors.h"
#include "core/graph_ops.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace omni {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // hard-coded in the reference (no key in the file)
constexpr int kPool = 5;

// 1-D convolution as im2col + matmul. ggml_conv_1d always builds an F16 im2col, which rounds F32 inputs;
// here the im2col takes the kernel's type, so an F32 file is computed in F32 throughout.
ggml_tensor * conv_1d(ggml_context * ctx, ggml_tensor * kernel, ggml_tensor * input, int stride, int padding) {
    const ggml_type cols_type = kernel->type == GGML_TYPE_F16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    ggml_tensor * cols = ggml_im2col(ctx, kernel, input, stride, 0, padding, 0, 1, 0, false, cols_type);
    ggml_tensor * out = ggml_mul_mat(ctx, ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[2] * cols->ne[1]),
                                     ggml_reshape_2d(ctx, kernel, kernel->ne[0] * kernel->ne[1], kernel->ne[2]));
    return ggml_reshape_3d(ctx, out, cols->ne[1], kernel->ne[2], cols->ne[2]);
}

int conv2_frames(int n_frames) {
    return (n_frames - 1) / 2 + 1;
}

int pooled_rows(int n_frames) {
    const int t = conv2_frames(n_frames);
    return t < kPool ? 0 : (t - kPool) / kPool + 1;
}

}  // namespace

AudioEncoder::AudioEncoder(const AudioEncoderOptions & options) {
    backend_ = std::make_unique<Backend>(BackendOptions{options.use_gpu, options.n_threads});
    weights_ = std::make_unique<WeightFile>(options.path, backend_->get());
    const GgufFile & meta = weights_->meta();
    const std::string arch = meta.get_string("general.architecture");
    if (arch != "whisper") {
        throw ModelFileError(options.path + ": general.architecture is '" + arch +
                             "', expected 'whisper' (audio encoder)");
    }
    n_embd_ = static_cast<int>(meta.get_u32("d_model"));
    n_head_ = static_cast<int>(meta.get_u32("encoder_attention_heads"));
    n_layer_ = static_cast<int>(meta.get_u32("encoder_layers"));
    n_mel_ = static_cast<int>(meta.get_u32_or("n_mel", 80));
    n_positions_ = static_cast<int>(meta.get_u32_or("max_source_positions", 1500));
    if (n_head_ <= 0 || n_embd_ % n_head_ != 0) {
        throw ModelFileError(options.path + ": d_model " + std::to_string(n_embd_) +
                             " is not divisible by encoder_attention_heads " + std::to_string(n_head_));
    }
    mel_ = std::make_unique<MelFrontend>(meta.get_f32_array("filters"), n_mel_);
    load_tensors();
    allocate_cache();
    runner_ = std::make_unique<GraphRunner>(backend_->get(), 1024 + static_cast<size_t>(n_layer_) * 64);
}

AudioEncoder::~AudioEncoder() {
    runner_.reset();
    if (cache_buffer_) ggml_backend_buffer_free(cache_buffer_);
    if (cache_ctx_) ggml_free(cache_ctx_);
}

void AudioEncoder::allocate_cache() {
    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * (2 * static_cast<size_t>(n_layer_) + 1);
    params.no_alloc = true;
    cache_ctx_ = ggml_init(params);
    if (!cache_ctx_) throw EngineError("could not create the audio encoder cache context");
    for (int i = 0; i < n_layer_; ++i) {
        k_cache_.push_back(ggml_new_tensor_2d(cache_ctx_, GGML_TYPE_F32, n_embd_, n_positions_));
        v_cache_.push_back(ggml_new_tensor_2d(cache_ctx_, GGML_TYPE_F32, n_embd_, n_positions_));
    }
    cache_buffer_ = ggml_backend_alloc_ctx_tensors(cache_ctx_, backend_->get());
    if (!cache_buffer_) throw EngineError("out of memory allocating the audio encoder cache");
}

void AudioEncoder::load_tensors() {
    const WeightFile & w = *weights_;
    const int d = n_embd_;
    ggml_tensor * fc1 =
        w.get("encoder.blocks.0.mlp.0.weight", {d, w.meta().tensor("encoder.blocks.0.mlp.0.weight").ne.back()});
    n_ff_ = static_cast<int>(fc1->ne[1]);
    ggml_tensor * p1 =
        w.get("audio_projector.linear1.weight", {d, w.meta().tensor("audio_projector.linear1.weight").ne.back()});
    n_mid_ = static_cast<int>(p1->ne[1]);
    n_out_ = static_cast<int>(w.meta().tensor("audio_projector.linear2.weight").ne.back());

    conv1_w_ = w.get("encoder.conv1.weight", {3, n_mel_, d});
    conv1_b_ = w.get("encoder.conv1.bias", {1, d});
    conv2_w_ = w.get("encoder.conv2.weight", {3, d, d});
    conv2_b_ = w.get("encoder.conv2.bias", {1, d});
    positions_ = w.get("encoder.positional_embedding", {d, n_positions_});
    ln_post_w_ = w.get("encoder.ln_post.weight", {d});
    ln_post_b_ = w.get("encoder.ln_post.bias", {d});
    proj1_w_ = p1;
    proj1_b_ = w.get("audio_projector.linear1.bias", {n_mid_});
    proj2_w_ = w.get("audio_projector.linear2.weight", {n_mid_, n_out_});
    proj2_b_ = w.get("audio_projector.linear2.bias", {n_out_});
    for (int i = 0; i < n_layer_; ++i) {
        const std::string p = "encoder.blocks." + std::to_string(i) + ".";
        layers_.push_back(Layer{
            w.get(p + "attn_ln.weight", {d}),
            w.get(p + "attn_ln.bias", {d}),
            w.get(p + "attn.query.weight", {d, d}),
            w.get(p + "attn.query.bias", {d}),
            w.get(p + "attn.key.weight", {d, d}),
            w.get(p + "attn.value.weight", {d, d}),
            w.get(p + "attn.value.bias", {d}),
            w.get(p + "attn.out.weight", {d, d}),
            w.get(p + "attn.out.bias", {d}),
            w.get(p + "mlp_ln.weight", {d}),
            w.get(p + "mlp_ln.bias", {d}),
            w.get(p + "mlp.0.weight", {d, n_ff_}),
            w.get(p + "mlp.0.bias", {n_ff_}),
            w.get(p + "mlp.2.weight", {n_ff_, d}),
            w.get(p + "mlp.2.bias", {d}),
        });
    }
}

std::vector<float> AudioEncoder::mel(const float * pcm, size_t n_samples, int * n_frames) const {
    return mel_->compute(pcm, n_samples, n_frames);
}

AudioRows AudioEncoder::encode(const float * pcm, size_t n_samples) {
    int n_frames = 0;
    const std::vector<float> m = mel_->compute(pcm, n_samples, &n_frames);
    return encode_mel(m.data(), n_frames);
}

AudioRows AudioEncoder::encode_mel(const float * mel, int n_frames) {
    AudioRows rows;
    const int window = 2 * n_positions_;
    for (int first = 0; first < n_frames; first += window) {
        AudioRows part = encode_window(mel, n_frames, first, std::min(window, n_frames - first), false);
        rows.data.insert(rows.data.end(), part.data.begin(), part.data.end());
        rows.n_rows += part.n_rows;
    }
    return rows;
}

AudioRows AudioEncoder::encode_chunk(const float * pcm, size_t n_samples) {
    int n_frames = 0;
    const std::vector<float> m = mel_->compute(pcm, n_samples, &n_frames);
    return encode_chunk_mel(m.data(), n_frames);
}

AudioRows AudioEncoder::encode_chunk_mel(const float * mel, int n_frames) {
    const int n_pos = conv2_frames(n_frames);
    if (n_pos > n_positions_) {
        // Longer than the whole position table: nothing can be cached; encode it in windows from position 0.
        reset_stream();
        return encode_mel(mel, n_frames);
    }
    if (cached_ + n_pos >= n_positions_) reset_stream();  // as the PyTorch reference does
    AudioRows rows = encode_window(mel, n_frames, 0, n_frames, true);
    cached_ += n_pos;
    return rows;
}

AudioRows AudioEncoder::encode_window(const float * mel, int n_mel_total_frames, int first_frame, int n_frames,
                                      bool cached) {
    AudioRows rows;
    rows.n_rows = pooled_rows(n_frames);
    if (rows.n_rows == 0 && !cached) return rows;
    ggml_tensor * input = nullptr;
    ggml_tensor * output = nullptr;
    std::vector<ggml_tensor *> cache_writes;
    const Window window{cached ? cached_ : 0, cached, &cache_writes};
    runner_->run(
        [&](ggml_context * ctx) {
            input = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_frames, n_mel_);
            ggml_set_input(input);
            output = build_encoder(ctx, input, n_frames, window);
            ggml_set_output(output);
            ggml_cgraph * graph = ggml_new_graph_custom(ctx, 1024 + static_cast<size_t>(n_layer_) * 64, false);
            for (ggml_tensor * write : cache_writes) ggml_build_forward_expand(graph, write);
            ggml_build_forward_expand(graph, output);
            return graph;
        },
        [&] {
            // The window's columns of the [mel][frame] matrix, one mel row at a time.
            for (int m = 0; m < n_mel_; ++m) {
                ggml_backend_tensor_set(input, mel + static_cast<size_t>(m) * n_mel_total_frames + first_frame,
                                        static_cast<size_t>(m) * n_frames * sizeof(float), n_frames * sizeof(float));
            }
        });
    rows.data.resize(static_cast<size_t>(rows.n_rows) * n_out_);
    if (rows.n_rows > 0) ggml_backend_tensor_get(output, rows.data.data(), 0, rows.data.size() * sizeof(float));
    return rows;
}

ggml_tensor * AudioEncoder::build_encoder(ggml_context * ctx, ggml_tensor * mel, int n_frames, const Window & window) {
    // Conv stem on (time, channels); biases are stored (1, C) so they broadcast over time.
    ggml_tensor * x = conv_1d(ctx, conv1_w_, mel, 1, 1);
    // Exact (erf) GELU as in the PyTorch reference; the C++ reference uses the tanh approximation.
    x = ggml_gelu_erf(ctx, ggml_add(ctx, x, conv1_b_));
    x = conv_1d(ctx, conv2_w_, x, 2, 1);
    x = ggml_gelu_erf(ctx, ggml_add(ctx, x, conv2_b_));
    const int n_pos = conv2_frames(n_frames);
    x = ggml_cont(ctx, ggml_transpose(ctx, x));  // (d, time)
    x = ggml_add(ctx, x,
                 ggml_view_2d(ctx, positions_, n_embd_, n_pos, positions_->nb[1], positions_->nb[1] * window.offset));
    for (size_t i = 0; i < layers_.size(); ++i) {
        x = build_layer(ctx, x, i, n_pos, window);
    }
    x = layer_norm(ctx, x, ln_post_w_, ln_post_b_, kLayerNormEps);
    x = linear(ctx, ggml_relu(ctx, linear(ctx, x, proj1_w_, proj1_b_)), proj2_w_, proj2_b_);  // (out, time)
    // AvgPool1d(5, 5) over time: the first rows*5 frames as (out, 5, rows), averaged over the 5.
    const int n_rows = pooled_rows(n_frames);
    if (n_rows == 0) return x;  // too short to pool: the graph still runs to extend the cache
    ggml_tensor * frames = ggml_view_3d(ctx, x, n_out_, kPool, n_rows, x->nb[1], x->nb[1] * kPool, 0);
    ggml_tensor * pooled = ggml_mean(ctx, ggml_cont(ctx, ggml_permute(ctx, frames, 1, 0, 2, 3)));  // (1, out, rows)
    return ggml_reshape_2d(ctx, pooled, n_out_, n_rows);
}

// This window's keys or values, preceded by the cached ones of earlier chunks; records the write that appends
// this window's to the cache (different columns from the ones read, so no ordering is needed).
ggml_tensor * AudioEncoder::with_cache(ggml_context * ctx, ggml_tensor * fresh, ggml_tensor * cache,
                                       const Window & window) {
    if (!window.cached) return fresh;
    const size_t column = cache->nb[1];
    ggml_tensor * slot = ggml_view_2d(ctx, cache, n_embd_, fresh->ne[1], column, column * window.offset);
    window.cache_writes->push_back(ggml_cpy(ctx, fresh, slot));
    if (window.offset == 0) return fresh;
    ggml_tensor * past = ggml_view_2d(ctx, cache, n_embd_, window.offset, column, 0);
    return ggml_concat(ctx, past, fresh, 1);
}

ggml_tensor * AudioEncoder::build_layer(ggml_context * ctx, ggml_tensor * x, size_t index, int n_positions,
                                        const Window & window) {
    const Layer & layer = layers_[index];
    const int head_dim = n_embd_ / n_head_;
    ggml_tensor * h = layer_norm(ctx, x, layer.attn_ln_w, layer.attn_ln_b, kLayerNormEps);
    ggml_tensor * q = ggml_reshape_3d(ctx, linear(ctx, h, layer.q_w, layer.q_b), head_dim, n_head_, n_positions);
    ggml_tensor * k_all = with_cache(ctx, linear(ctx, h, layer.k_w, nullptr), k_cache_[index], window);
    ggml_tensor * v_all = with_cache(ctx, linear(ctx, h, layer.v_w, layer.v_b), v_cache_[index], window);
    const int n_keys = static_cast<int>(k_all->ne[1]);
    ggml_tensor * k = ggml_reshape_3d(ctx, k_all, head_dim, n_head_, n_keys);
    ggml_tensor * v = ggml_reshape_3d(ctx, v_all, head_dim, n_head_, n_keys);
    ggml_tensor * attn = attention(ctx, q, k, v, false);
    x = ggml_add(ctx, x, linear(ctx, attn, layer.o_w, layer.o_b));
    h = layer_norm(ctx, x, layer.mlp_ln_w, layer.mlp_ln_b, kLayerNormEps);
    h = linear(ctx, ggml_gelu_erf(ctx, linear(ctx, h, layer.fc1_w, layer.fc1_b)), layer.fc2_w, layer.fc2_b);
    return ggml_add(ctx, x, h);
}

}  // namespace omni

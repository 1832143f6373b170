#include "token2wav/token2mel.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include "core/errors.h"
#include "core/graph_ops.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

namespace omni {
namespace {

constexpr int kCfgRows = 2;
constexpr int kDitConvFrames = 2;
constexpr int kLookaheadCacheFrames = 2;
constexpr float kCfgRate = 0.7f;
constexpr float kTimeScale = 1000.0f;
constexpr float kConformerNormEps = 1e-12f;
constexpr float kEmbedNormEps = 1e-5f;
constexpr float kDitNormEps = 1e-6f;
constexpr float kQkNormEps = 1e-5f;
constexpr float kDitConvNormEps = 1e-5f;
constexpr float kLeakySlope = 0.01f;
constexpr float kSpeakerNormEps = 1e-12f;
// DiT block modulation parts, in the order of the adaLN output (token2wav.md §3.5).
enum ModulationPart {
    shift_msa,
    scale_msa,
    gate_msa,
    shift_mlp,
    scale_mlp,
    gate_mlp,
    shift_conv,
    scale_conv,
    gate_conv
};
constexpr int kParts = 9;

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, const LinearWeights & w) {
    return omni::linear(ctx, x, w.w, w.b);
}

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, const NormWeights & w, float eps) {
    return omni::layer_norm(ctx, x, w.w, w.b, eps);
}

// A valid Conv1d over x = [C_in, T + K - 1, B]: the K shifted views side by side, then one matrix product.
ggml_tensor * conv1d(ggml_context * ctx, ggml_tensor * x, const ConvWeights & w) {
    const int64_t out_len = x->ne[1] - w.kernel + 1;
    ggml_tensor * unfolded = nullptr;
    for (int k = 0; k < w.kernel; ++k) {
        ggml_tensor * shifted =
            ggml_view_3d(ctx, x, x->ne[0], out_len, x->ne[2], x->nb[1], x->nb[2], static_cast<size_t>(k) * x->nb[1]);
        unfolded = unfolded ? ggml_concat(ctx, unfolded, shifted, 0) : ggml_cont(ctx, shifted);
    }
    return ggml_add(ctx, ggml_mul_mat(ctx, w.w, unfolded), w.b);
}

ggml_tensor * mish(ggml_context * ctx, ggml_tensor * x) {
    return ggml_mul(ctx, x, ggml_tanh(ctx, ggml_softplus(ctx, x)));
}

// Rows [from, from + n) along dim 1 of a 2-D..4-D tensor.
ggml_tensor * rows(ggml_context * ctx, ggml_tensor * t, int64_t from, int64_t n) {
    return ggml_view_4d(ctx, t, t->ne[0], n, t->ne[2], t->ne[3], t->nb[1], t->nb[2], t->nb[3],
                        static_cast<size_t>(from) * t->nb[1]);
}

// The sinusoid relative-position table of the encoder for K keys: 2K - 1 rows of `width`, row m for distance
// K - 1 - m, interleaved sin/cos, in float32 like the reference's table.
std::vector<float> relative_positions(int width, int n_keys) {
    std::vector<float> inv_freq(static_cast<size_t>(width / 2));
    const float log_base = -std::log(10000.0f) / static_cast<float>(width);
    for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::exp(static_cast<float>(2 * i) * log_base);
    const int n_rows = 2 * n_keys - 1;
    std::vector<float> table(static_cast<size_t>(width) * n_rows);
    for (int m = 0; m < n_rows; ++m) {
        const float distance = static_cast<float>(n_keys - 1 - m);
        float * row = table.data() + static_cast<size_t>(m) * width;
        for (size_t i = 0; i < inv_freq.size(); ++i) {
            const float angle = distance * inv_freq[i];
            row[2 * i] = std::sin(angle);
            row[2 * i + 1] = std::cos(angle);
        }
    }
    return table;
}

// N(0, 1) samples from a seeded 64-bit Mersenne Twister through Box-Muller (the same on every platform).
std::vector<float> normal_noise(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const double two_pi = 6.283185307179586;
    const auto uniform = [&rng] { return (static_cast<double>(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };
    std::vector<float> out(n);
    for (size_t i = 0; i < n; i += 2) {
        const double radius = std::sqrt(-2.0 * std::log(uniform()));
        const double angle = two_pi * uniform();
        out[i] = static_cast<float>(radius * std::cos(angle));
        if (i + 1 < n) out[i + 1] = static_cast<float>(radius * std::sin(angle));
    }
    return out;
}

CacheUpdate plan_update(int cached, int added, bool trim, int prompt, int kept) {
    CacheUpdate u{cached, cached + added, cached, cached};
    if (trim) {
        u.keep_from = u.total - kept;
        u.dst = prompt;
    }
    return u;
}

}  // namespace

struct Token2Mel::WindowGraph {
    ggml_tensor *tokens = nullptr, *token_positions = nullptr, *mel_positions = nullptr, *noise = nullptr;
    ggml_tensor * mel = nullptr;
    int n_out = 0;  // tokens whose mel the window emits
    CacheUpdate token_cache, mel_cache, est_cache;
};

Token2Mel::Token2Mel(const Token2MelOptions & options) {
    backend_ = std::make_unique<Backend>(BackendOptions{options.use_gpu, options.n_threads});
    weights_ = std::make_unique<FlowWeights>(options.folder, backend_->get());
    on_cpu_ = ggml_backend_is_cpu(backend_->get());
    prompt_ = load_prompt_cache(path_in(options.folder, "prompt_cache.gguf"), *weights_);
    if (options.n_timesteps < 0 || (options.n_timesteps > 0 && options.n_timesteps != prompt_.n_timesteps)) {
        throw std::invalid_argument("n_timesteps " + std::to_string(options.n_timesteps) +
                                    " does not match the prompt cache, which was built with " +
                                    std::to_string(prompt_.n_timesteps) + " steps (use 0 for the cache's value)");
    }
    n_timesteps_ = prompt_.n_timesteps;
    max_window_ = weights_->encoder().lookahead + kChunkTokens;
    noise_ = normal_noise(static_cast<size_t>(n_mels()) * kNoiseFrames, options.noise_seed);

    std::vector<float> span(static_cast<size_t>(n_timesteps_) + 1);
    for (size_t i = 0; i < span.size(); ++i) {
        const float fraction = static_cast<float>(i) / static_cast<float>(n_timesteps_);
        span[i] = 1.0f - std::cos(fraction * 0.5f * static_cast<float>(M_PI));  // cosine schedule
    }
    float t = span[0], dt = span[1] - span[0];
    for (int step = 1; step <= n_timesteps_; ++step) {  // t accumulated like the reference's float32 loop
        t_schedule_.push_back(t);
        dt_schedule_.push_back(dt);
        t = t + dt;
        if (step < n_timesteps_) dt = span[static_cast<size_t>(step) + 1] - t;
    }

    runner_ = std::make_unique<GraphRunner>(backend_->get(), max_graph_nodes());
    allocate_caches();
    precompute_modulation();
    compute_speaker();
    // Size the compute buffer for the largest window: a full final window on caches at their steady length.
    token_len_ = prompt_.conformer_frames / 2 + kKeptTokens;
    est_len_ = prompt_.estimator_frames + kKeptFrames;
    WindowGraph probe;
    runner_->reserve([&](ggml_context * ctx) { return build_window(ctx, probe, max_window_, true); });
    reset();
}

Token2Mel::~Token2Mel() {
    runner_.reset();
    if (own_buffer_) ggml_backend_buffer_free(own_buffer_);
    if (own_ctx_) ggml_free(own_ctx_);
}

void Token2Mel::allocate_caches() {
    const EncoderWeights & enc = weights_->encoder();
    const DitWeights & dit = weights_->dit();
    const size_t n_layers = static_cast<size_t>(sizes().n_layers);
    const int slots = static_cast<int>(dit.blocks.size()) * n_timesteps_;
    enc_capacity_ = prompt_.conformer_frames + kKeptFrames + 2 * max_window_;
    est_capacity_ = prompt_.estimator_frames + kKeptFrames + 2 * max_window_;
    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * (2 * n_layers + 2 * static_cast<size_t>(slots) + 8);
    params.no_alloc = true;
    own_ctx_ = ggml_init(params);
    if (!own_ctx_) throw EngineError("could not create the Token2Mel cache context");
    cache_.conv = ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, enc.width, kLookaheadCacheFrames + 2 * enc.up_stride);
    for (size_t i = 0; i < n_layers; ++i) {
        cache_.enc_k.push_back(ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, enc.width, enc_capacity_));
        cache_.enc_v.push_back(ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, enc.width, enc_capacity_));
    }
    cache_.est_conv = ggml_new_tensor_4d(own_ctx_, GGML_TYPE_F32, 2 * dit.hidden, kDitConvFrames, slots, kCfgRows);
    for (int s = 0; s < slots; ++s) {
        cache_.est_k.push_back(
            ggml_new_tensor_4d(own_ctx_, GGML_TYPE_F32, dit.head_dim, est_capacity_, dit.n_heads, kCfgRows));
        cache_.est_v.push_back(
            ggml_new_tensor_4d(own_ctx_, GGML_TYPE_F32, dit.head_dim, est_capacity_, dit.n_heads, kCfgRows));
    }
    modulation_ = ggml_new_tensor_3d(own_ctx_, GGML_TYPE_F32, kParts * dit.hidden,
                                     static_cast<int64_t>(dit.blocks.size()), n_timesteps_);
    final_modulation_ = ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, 2 * dit.hidden, n_timesteps_);
    speaker_ = ggml_new_tensor_1d(own_ctx_, GGML_TYPE_F32, n_mels());
    own_buffer_ = ggml_backend_alloc_ctx_tensors(own_ctx_, backend_->get());
    if (!own_buffer_) throw EngineError("out of memory allocating the Token2Mel caches");
}

// The adaLN modulations depend on the step only (t is the same for every window), so they are computed once:
// for each step c = t_embedder(t), then every block's Linear(SiLU(c)), with 1 added to the scale parts.
void Token2Mel::precompute_modulation() {
    const DitWeights & dit = weights_->dit();
    const int half = dit.time_embd / 2;
    std::vector<float> embedding(static_cast<size_t>(dit.time_embd) * n_timesteps_);
    for (int step = 0; step < n_timesteps_; ++step) {
        const float scaled_t = t_schedule_[static_cast<size_t>(step)] * kTimeScale;
        for (int i = 0; i < half; ++i) {
            const float freq = std::exp(-std::log(10000.0f) * static_cast<float>(i) / static_cast<float>(half));
            const float arg = scaled_t * freq;
            embedding[static_cast<size_t>(step) * dit.time_embd + i] = std::cos(arg);
            embedding[static_cast<size_t>(step) * dit.time_embd + half + i] = std::sin(arg);
        }
    }
    ggml_tensor * input = nullptr;
    std::vector<ggml_tensor *> block_out;
    ggml_tensor * final_out = nullptr;
    runner_->run(
        [&](ggml_context * ctx) {
            input = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, dit.time_embd, n_timesteps_);
            ggml_set_input(input);
            ggml_tensor * c = linear(ctx, ggml_silu(ctx, linear(ctx, input, dit.t_mlp0)), dit.t_mlp2);
            ggml_tensor * act = ggml_silu(ctx, c);
            ggml_cgraph * graph = ggml_new_graph(ctx);
            block_out.clear();
            for (const DitBlockWeights & b : dit.blocks) {
                block_out.push_back(linear(ctx, act, b.adaln));
                ggml_set_output(block_out.back());
                ggml_build_forward_expand(graph, block_out.back());
            }
            final_out = linear(ctx, act, dit.final_adaln);
            ggml_set_output(final_out);
            ggml_build_forward_expand(graph, final_out);
            return graph;
        },
        [&] { ggml_backend_tensor_set(input, embedding.data(), 0, ggml_nbytes(input)); });

    const size_t width = static_cast<size_t>(kParts) * dit.hidden;
    const size_t n_blocks = dit.blocks.size();
    std::vector<float> all(width * n_blocks * n_timesteps_), one(width * n_timesteps_);
    for (size_t b = 0; b < n_blocks; ++b) {
        ggml_backend_tensor_get(block_out[b], one.data(), 0, one.size() * sizeof(float));
        for (int step = 0; step < n_timesteps_; ++step) {
            float * dst = all.data() + (static_cast<size_t>(step) * n_blocks + b) * width;
            std::copy_n(one.data() + static_cast<size_t>(step) * width, width, dst);
            for (int part : {scale_msa, scale_mlp, scale_conv}) {
                for (int i = 0; i < dit.hidden; ++i) dst[static_cast<size_t>(part) * dit.hidden + i] += 1.0f;
            }
        }
    }
    ggml_backend_tensor_set(modulation_, all.data(), 0, all.size() * sizeof(float));
    std::vector<float> final_values(static_cast<size_t>(2 * dit.hidden) * n_timesteps_);
    ggml_backend_tensor_get(final_out, final_values.data(), 0, final_values.size() * sizeof(float));
    for (int step = 0; step < n_timesteps_; ++step) {
        for (int i = 0; i < dit.hidden; ++i) {
            final_values[static_cast<size_t>(step) * 2 * dit.hidden + dit.hidden + i] += 1.0f;
        }
    }
    ggml_backend_tensor_set(final_modulation_, final_values.data(), 0, final_values.size() * sizeof(float));
}

// spk_embed_affine_layer(F.normalize(spk)): a 192 -> n_mels product, once per engine.
void Token2Mel::compute_speaker() {
    const std::vector<float> & spk = prompt_.spk;
    float norm = 0.0f;
    for (float v : spk) norm += v * v;
    norm = std::max(std::sqrt(norm), kSpeakerNormEps);
    const HostTensor & w = weights_->spk_affine_w();
    const HostTensor & b = weights_->spk_affine_b();
    const size_t dim = spk.size();
    std::vector<float> projected(static_cast<size_t>(n_mels()));
    for (size_t o = 0; o < projected.size(); ++o) {
        float sum = 0.0f;
        for (size_t i = 0; i < dim; ++i) sum += w.data[o * dim + i] * (spk[i] / norm);
        projected[o] = sum + b.data[o];
    }
    ggml_backend_tensor_set(speaker_, projected.data(), 0, projected.size() * sizeof(float));
}

// A window graph: the encoder's layers, then every step's DiT blocks (about a hundred nodes each).
size_t Token2Mel::max_graph_nodes() const {
    const Token2MelSizes s = sizes();
    return 1024 + static_cast<size_t>(s.n_layers) * 96 + static_cast<size_t>(n_timesteps_) * s.depth * 128;
}

Token2MelSizes Token2Mel::sizes() const {
    const EncoderWeights & e = weights_->encoder();
    const DitWeights & d = weights_->dit();
    Token2MelSizes s;
    s.width = e.width;
    s.n_layers = static_cast<int>(e.token_layers.size() + e.mel_layers.size());
    s.n_heads = e.n_heads;
    s.head_dim = e.head_dim;
    s.conv_cache_frames = kLookaheadCacheFrames + 2 * e.up_stride;
    s.depth = static_cast<int>(d.blocks.size());
    s.hidden = d.hidden;
    s.dit_heads = d.n_heads;
    s.dit_head_dim = d.head_dim;
    return s;
}

void Token2Mel::reset() {
    const EncoderWeights & enc = weights_->encoder();
    const DitWeights & dit = weights_->dit();
    ggml_backend_tensor_set(cache_.conv, prompt_.conformer_cnn.data(), 0, ggml_nbytes(cache_.conv));
    // Conformer file layout [2 * head_dim, L, heads, layer]; ours per layer [width, capacity] (a row per position).
    const int frames = prompt_.conformer_frames;
    const size_t n_token_layers = enc.token_layers.size();
    for (size_t layer = 0; layer < cache_.enc_k.size(); ++layer) {
        const int length = layer < n_token_layers ? frames / 2 : frames;
        std::vector<float> k(static_cast<size_t>(enc.width) * length), v(k.size());
        for (int h = 0; h < enc.n_heads; ++h) {
            for (int t = 0; t < length; ++t) {
                const float * src = prompt_.conformer_att.data() +
                                    ((layer * enc.n_heads + h) * static_cast<size_t>(frames) + t) * 2 * enc.head_dim;
                float * k_row = k.data() + static_cast<size_t>(t) * enc.width + static_cast<size_t>(h) * enc.head_dim;
                std::copy_n(src, enc.head_dim, k_row);
                std::copy_n(src + enc.head_dim, enc.head_dim,
                            v.data() + static_cast<size_t>(t) * enc.width + static_cast<size_t>(h) * enc.head_dim);
            }
        }
        ggml_backend_tensor_set(cache_.enc_k[layer], k.data(), 0, k.size() * sizeof(float));
        ggml_backend_tensor_set(cache_.enc_v[layer], v.data(), 0, v.size() * sizeof(float));
    }
    ggml_backend_tensor_set(cache_.est_conv, prompt_.estimator_cnn.data(), 0, ggml_nbytes(cache_.est_conv));
    // Estimator file layout [2 * head_dim, L, slot * heads + head, row]; ours per slot [head_dim, capacity, heads,
    // row]. The prompt's frames keep their order (the DiT has no positions, so key order does not matter).
    const int est_frames = prompt_.estimator_frames;
    const size_t slots = cache_.est_k.size();
    std::vector<float> k(static_cast<size_t>(dit.head_dim) * est_capacity_ * dit.n_heads * kCfgRows, 0.0f);
    std::vector<float> v(k.size(), 0.0f);
    for (size_t slot = 0; slot < slots; ++slot) {
        for (int row = 0; row < kCfgRows; ++row) {
            for (int h = 0; h < dit.n_heads; ++h) {
                for (int t = 0; t < est_frames; ++t) {
                    const size_t file_block = (static_cast<size_t>(row) * slots + slot) * dit.n_heads + h;
                    const float * src = prompt_.estimator_att.data() + (file_block * est_frames + t) * 2 * dit.head_dim;
                    const size_t dst =
                        ((static_cast<size_t>(row) * dit.n_heads + h) * est_capacity_ + t) * dit.head_dim;
                    std::copy_n(src, dit.head_dim, k.data() + dst);
                    std::copy_n(src + dit.head_dim, dit.head_dim, v.data() + dst);
                }
            }
        }
        ggml_backend_tensor_set(cache_.est_k[slot], k.data(), 0, k.size() * sizeof(float));
        ggml_backend_tensor_set(cache_.est_v[slot], v.data(), 0, v.size() * sizeof(float));
    }
    token_len_ = frames / 2;
    est_len_ = est_frames;
    est_chunks_.clear();
}

void Token2Mel::check_tokens(const std::vector<int> & tokens, bool last) const {
    const int n = static_cast<int>(tokens.size());
    const int minimum = last ? 1 : lookahead() + 1;
    if (n < minimum || n > max_window_) {
        throw std::invalid_argument("tokens: a " + std::string(last ? "last" : "non-final") + " window needs " +
                                    std::to_string(minimum) + " to " + std::to_string(max_window_) + " tokens, got " +
                                    std::to_string(n));
    }
    for (int token : tokens) {
        if (token < 0 || token >= weights_->n_tokens()) {
            throw std::invalid_argument("tokens: " + std::to_string(token) + " is outside [0, " +
                                        std::to_string(weights_->n_tokens()) + ")");
        }
    }
}

std::vector<float> Token2Mel::feed(const std::vector<int> & tokens, bool last) {
    check_tokens(tokens, last);
    const int n = static_cast<int>(tokens.size());
    const int width = weights_->encoder().width;
    WindowGraph g;
    runner_->run([&](ggml_context * ctx) { return build_window(ctx, g, n, last); },
                 [&] {
                     ggml_backend_tensor_set(g.tokens, tokens.data(), 0, ggml_nbytes(g.tokens));
                     const std::vector<float> token_pos = relative_positions(width, g.token_cache.total);
                     const std::vector<float> mel_pos = relative_positions(width, g.mel_cache.total);
                     ggml_backend_tensor_set(g.token_positions, token_pos.data(), 0, ggml_nbytes(g.token_positions));
                     ggml_backend_tensor_set(g.mel_positions, mel_pos.data(), 0, ggml_nbytes(g.mel_positions));
                     // The window's slice of the fixed noise starts at the estimator cache length.
                     const int frames = 2 * g.n_out;
                     std::vector<float> x0(static_cast<size_t>(frames) * n_mels());
                     for (int c = 0; c < n_mels(); ++c) {
                         for (int t = 0; t < frames; ++t) {
                             x0[static_cast<size_t>(t) * n_mels() + c] =
                                 noise_[static_cast<size_t>(c) * kNoiseFrames + est_len_ + t] * prompt_.temperature;
                         }
                     }
                     ggml_backend_tensor_set(g.noise, x0.data(), 0, ggml_nbytes(g.noise));
                 });
    std::vector<float> mel(static_cast<size_t>(ggml_nelements(g.mel)));
    ggml_backend_tensor_get(g.mel, mel.data(), 0, mel.size() * sizeof(float));
    token_len_ = g.token_cache.new_length();
    est_len_ = g.est_cache.new_length();
    // The estimator keeps whole generated chunks, newest last; a trim drops the oldest frames.
    est_chunks_.push_back(2 * g.n_out);
    int excess = 0;
    for (int frames : est_chunks_) excess += frames;
    excess -= est_len_ - prompt_.estimator_frames;
    while (excess > 0 && !est_chunks_.empty()) {
        const int dropped = std::min(excess, est_chunks_.front());
        est_chunks_.front() -= dropped;
        excess -= dropped;
        if (est_chunks_.front() == 0) est_chunks_.erase(est_chunks_.begin());
    }
    return mel;
}

ggml_cgraph * Token2Mel::build_window(ggml_context * ctx, WindowGraph & g, int n_tokens, bool last) {
    ggml_cgraph * graph = ggml_new_graph_custom(ctx, max_graph_nodes(), false);
    g.n_out = last ? n_tokens : n_tokens - lookahead();
    const int frames = 2 * g.n_out;
    // The trims (token2wav.md §5.3): conformer as MU 1.0.7; estimator keeps the prompt and the newest frames, not
    // SA/MU's [first P ; last 100] of a newest-first cache, which from window 4 on keeps an older slice instead.
    const int conf_prompt = prompt_.conformer_frames;
    const bool trim_conformer = !last && 2 * (token_len_ + g.n_out) > conf_prompt + kKeptFrames;
    g.token_cache = plan_update(token_len_, g.n_out, trim_conformer, conf_prompt / 2, kKeptTokens);
    g.mel_cache = plan_update(2 * token_len_, frames, trim_conformer, conf_prompt, kKeptFrames);
    const bool trim_estimator = !last && est_len_ + frames > prompt_.estimator_frames + kKeptFrames;
    g.est_cache = plan_update(est_len_, frames, trim_estimator, prompt_.estimator_frames, kKeptFrames);

    ggml_tensor * mu = build_encoder(ctx, graph, g, n_tokens, last);  // [n_mels, frames]
    // CFG rows: row 0 sees [x ; mu ; spk ; cond = 0], row 1 sees [x ; 0 ; 0 ; 0].
    ggml_tensor * speaker = ggml_repeat(ctx, ggml_reshape_2d(ctx, speaker_, n_mels(), 1), mu);
    ggml_tensor * cond_rows = ggml_pad(ctx, ggml_concat(ctx, mu, speaker, 0), n_mels(), 0, 0, 0);
    g.noise = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_mels(), frames);
    ggml_set_input(g.noise);
    ggml_tensor * x = g.noise;
    for (int step = 0; step < n_timesteps_; ++step) {
        ggml_tensor * velocity = build_dit(ctx, graph, x, cond_rows, step, g.est_cache);  // [n_mels, frames, 2]
        ggml_tensor * v_cond = ggml_view_2d(ctx, velocity, n_mels(), frames, velocity->nb[1], 0);
        ggml_tensor * v_uncond = ggml_view_2d(ctx, velocity, n_mels(), frames, velocity->nb[1], velocity->nb[2]);
        ggml_tensor * guided =
            ggml_sub(ctx, ggml_scale(ctx, v_cond, 1.0f + kCfgRate), ggml_scale(ctx, v_uncond, kCfgRate));
        x = ggml_add(ctx, x, ggml_scale(ctx, guided, dt_schedule_[static_cast<size_t>(step)]));
    }
    g.mel = ggml_cont(ctx, ggml_transpose(ctx, x));  // [frames, n_mels]: channel-major like the reference
    ggml_set_output(g.mel);
    ggml_build_forward_expand(graph, g.mel);
    return graph;
}

ggml_tensor * Token2Mel::build_encoder(ggml_context * ctx, ggml_cgraph * graph, WindowGraph & g, int n_tokens,
                                       bool last) {
    const EncoderWeights & e = weights_->encoder();
    const float x_scale = std::sqrt(static_cast<float>(e.width));
    g.tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
    ggml_set_input(g.tokens);
    ggml_tensor * x = ggml_get_rows(ctx, weights_->token_embedding(), g.tokens);
    x = ggml_scale(ctx, layer_norm(ctx, linear(ctx, x, e.embed), e.embed_norm, kEmbedNormEps), x_scale);
    if (last) x = ggml_pad(ctx, x, 0, e.lookahead, 0, 0);  // the last window's lookahead is zeros

    // Pre-lookahead: conv1 over the window (its last `lookahead` inputs only look ahead), then conv2 with the
    // previous window's last two conv1 outputs in front.
    ggml_tensor * lookahead = ggml_leaky_relu(ctx, conv1d(ctx, x, e.lookahead_conv1), kLeakySlope, false);
    ggml_tensor * conv_cache = cache_.conv;
    ggml_tensor * ext = ggml_concat(ctx, ggml_view_2d(ctx, conv_cache, e.width, 2, conv_cache->nb[1], 0), lookahead, 1);
    ggml_build_forward_expand(graph, ggml_cpy(ctx, rows(ctx, ext, ext->ne[1] - 2, 2),
                                              ggml_view_2d(ctx, conv_cache, e.width, 2, conv_cache->nb[1], 0)));
    x = ggml_add(ctx, conv1d(ctx, ext, e.lookahead_conv2), rows(ctx, x, 0, g.n_out));

    g.token_positions = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, e.width, 2 * g.token_cache.total - 1);
    ggml_set_input(g.token_positions);
    for (size_t i = 0; i < e.token_layers.size(); ++i) {
        x = build_conformer(ctx, graph, x, i, e.token_layers[i], g.token_positions, g.token_cache.cached,
                            g.token_cache.keep_from, g.token_cache.dst);
    }

    // Upsample x2 (nearest), the previous window's last 4 upsampled frames in front, conv k5.
    const int64_t t = x->ne[1];
    x = ggml_reshape_2d(ctx, ggml_repeat_4d(ctx, ggml_reshape_3d(ctx, x, e.width, 1, t), e.width, e.up_stride, t, 1),
                        e.width, e.up_stride * t);
    const int up_frames = 2 * e.up_stride;
    ggml_tensor * up_cache =
        ggml_view_2d(ctx, conv_cache, e.width, up_frames, conv_cache->nb[1], 2 * conv_cache->nb[1]);
    ext = ggml_concat(ctx, up_cache, x, 1);
    ggml_build_forward_expand(graph, ggml_cpy(ctx, rows(ctx, ext, ext->ne[1] - up_frames, up_frames), up_cache));
    x = conv1d(ctx, ext, e.up_conv);
    x = ggml_scale(ctx, layer_norm(ctx, linear(ctx, x, e.up_embed), e.up_embed_norm, kEmbedNormEps), x_scale);

    g.mel_positions = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, e.width, 2 * g.mel_cache.total - 1);
    ggml_set_input(g.mel_positions);
    const size_t offset = e.token_layers.size();
    for (size_t i = 0; i < e.mel_layers.size(); ++i) {
        x = build_conformer(ctx, graph, x, offset + i, e.mel_layers[i], g.mel_positions, g.mel_cache.cached,
                            g.mel_cache.keep_from, g.mel_cache.dst);
    }
    x = layer_norm(ctx, x, e.after_norm, kEmbedNormEps);
    return linear(ctx, x, weights_->encoder_proj());
}

// A pre-norm conformer layer (no macaron, no conv module) with ESPnet relative-position attention over the cached
// keys and the window's; the window's keys/values are appended to the layer's cache (rows [keep_from, K) of the
// appended keys are written at `dst`, which drops older rows when the cache is trimmed).
ggml_tensor * Token2Mel::build_conformer(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, size_t layer,
                                         const ConformerLayerWeights & w, ggml_tensor * pos, int cached, int keep_from,
                                         int dst) {
    const EncoderWeights & e = weights_->encoder();
    const int64_t t = x->ne[1];
    const int64_t n_keys = cached + t;
    ggml_tensor * h = layer_norm(ctx, x, w.norm_mha, kConformerNormEps);
    ggml_tensor * q = ggml_reshape_3d(ctx, linear(ctx, h, w.q), e.head_dim, e.n_heads, t);
    const auto with_cache = [&](ggml_tensor * fresh, ggml_tensor * cache) {
        ggml_tensor * all =
            cached > 0 ? ggml_concat(ctx, ggml_view_2d(ctx, cache, e.width, cached, cache->nb[1], 0), fresh, 1) : fresh;
        const int64_t n_keep = n_keys - keep_from;
        ggml_build_forward_expand(graph, ggml_cpy(ctx, rows(ctx, all, keep_from, n_keep),
                                                  ggml_view_2d(ctx, cache, e.width, n_keep, cache->nb[1],
                                                               static_cast<size_t>(dst) * cache->nb[1])));
        return all;
    };
    ggml_tensor * k_all = with_cache(linear(ctx, h, w.k), cache_.enc_k[layer]);
    ggml_tensor * v_all = with_cache(linear(ctx, h, w.v), cache_.enc_v[layer]);

    ggml_tensor * keys = ggml_permute(ctx, ggml_reshape_3d(ctx, k_all, e.head_dim, e.n_heads, n_keys), 0, 2, 1, 3);
    ggml_tensor * q_u = ggml_permute(ctx, ggml_add(ctx, q, w.pos_bias_u), 0, 2, 1, 3);  // (head_dim, t, heads)
    ggml_tensor * q_v = ggml_permute(ctx, ggml_add(ctx, q, w.pos_bias_v), 0, 2, 1, 3);
    ggml_tensor * content = ggml_mul_mat(ctx, keys, q_u);  // (K, t, heads)
    ggml_tensor * p = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, w.pos.w, pos), e.head_dim, e.n_heads, 2 * n_keys - 1);
    ggml_tensor * position_all = ggml_mul_mat(ctx, ggml_permute(ctx, p, 0, 2, 1, 3), q_v);  // (2K - 1, t, heads)
    // ESPnet's rel_shift: query i and key j read row t - 1 - i + j, a view with a row stride one element short.
    ggml_tensor * position =
        ggml_cont(ctx, ggml_view_3d(ctx, position_all, n_keys, t, e.n_heads, position_all->nb[1] - sizeof(float),
                                    position_all->nb[2], static_cast<size_t>(t - 1) * sizeof(float)));
    ggml_tensor * probs = ggml_soft_max_ext(ctx, ggml_add(ctx, content, position), nullptr,
                                            1.0f / std::sqrt(static_cast<float>(e.head_dim)), 0.0f);
    ggml_tensor * values =
        ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v_all, e.head_dim, e.n_heads, n_keys), 1, 2, 0, 3));
    ggml_tensor * attn = ggml_mul_mat(ctx, values, probs);  // (head_dim, t, heads)
    attn = ggml_reshape_2d(ctx, ggml_cont(ctx, ggml_permute(ctx, attn, 0, 2, 1, 3)), e.width, t);
    x = ggml_add(ctx, x, linear(ctx, attn, w.out));
    h = layer_norm(ctx, x, w.norm_ff, kConformerNormEps);
    return ggml_add(ctx, x, linear(ctx, ggml_silu(ctx, linear(ctx, h, w.ff1)), w.ff2));
}

ggml_tensor * Token2Mel::build_dit(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, ggml_tensor * cond_rows,
                                   int step, const CacheUpdate & plan) {
    const DitWeights & d = weights_->dit();
    ggml_tensor * row_cond = ggml_concat(ctx, x, cond_rows, 0);
    ggml_tensor * row_uncond = ggml_pad(ctx, x, 3 * n_mels(), 0, 0, 0);
    ggml_tensor * h = linear(ctx, ggml_concat(ctx, row_cond, row_uncond, 2), d.in_proj);  // [hidden, frames, 2]
    for (int b = 0; b < static_cast<int>(d.blocks.size()); ++b) h = build_dit_block(ctx, graph, h, step, b, plan);
    const size_t offset = static_cast<size_t>(step) * final_modulation_->nb[1];
    ggml_tensor * shift = ggml_view_1d(ctx, final_modulation_, d.hidden, offset);
    ggml_tensor * scale = ggml_view_1d(ctx, final_modulation_, d.hidden, offset + d.hidden * sizeof(float));
    h = ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, h, kDitNormEps), scale), shift);
    return linear(ctx, h, d.final_linear);
}

ggml_tensor * Token2Mel::build_dit_block(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, int step, int block,
                                         const CacheUpdate & plan) {
    const DitWeights & d = weights_->dit();
    const DitBlockWeights & w = d.blocks[static_cast<size_t>(block)];
    const int slot = step * static_cast<int>(d.blocks.size()) + block;
    const size_t part_bytes = static_cast<size_t>(d.hidden) * sizeof(float);
    const size_t mod_offset = (static_cast<size_t>(step) * d.blocks.size() + block) * kParts * part_bytes;
    const auto part = [&](int p) { return ggml_view_1d(ctx, modulation_, d.hidden, mod_offset + p * part_bytes); };
    const auto modulate = [&](ggml_tensor * y, int shift, int scale) {
        return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, y, kDitNormEps), part(scale)), part(shift));
    };
    const int64_t f = x->ne[1];

    // Attention over [prompt + earlier windows ; this window] (no positions, no mask, so key order is free).
    ggml_tensor * h = modulate(x, shift_msa, scale_msa);
    const auto heads = [&](const LinearWeights & lw, const NormWeights * nw) {
        ggml_tensor * y = ggml_reshape_4d(ctx, linear(ctx, h, lw), d.head_dim, d.n_heads, f, kCfgRows);
        if (nw) y = layer_norm(ctx, y, *nw, kQkNormEps);
        return ggml_permute(ctx, y, 0, 2, 1, 3);  // (head_dim, frames, heads, rows)
    };
    const auto with_cache = [&](ggml_tensor * fresh, ggml_tensor * cache) {
        ggml_tensor * past = ggml_view_4d(ctx, cache, d.head_dim, plan.cached, d.n_heads, kCfgRows, cache->nb[1],
                                          cache->nb[2], cache->nb[3], 0);
        ggml_tensor * all = plan.cached > 0 ? ggml_concat(ctx, past, fresh, 1) : ggml_cont(ctx, fresh);
        const int64_t n_keep = plan.total - plan.keep_from;
        ggml_tensor * target = ggml_view_4d(ctx, cache, d.head_dim, n_keep, d.n_heads, kCfgRows, cache->nb[1],
                                            cache->nb[2], cache->nb[3], static_cast<size_t>(plan.dst) * cache->nb[1]);
        ggml_build_forward_expand(graph, ggml_cpy(ctx, rows(ctx, all, plan.keep_from, n_keep), target));
        return all;
    };
    ggml_tensor * q = heads(w.q, &w.q_norm);
    ggml_tensor * keys = with_cache(heads(w.k, &w.k_norm), cache_.est_k[static_cast<size_t>(slot)]);
    ggml_tensor * values = with_cache(heads(w.v, nullptr), cache_.est_v[static_cast<size_t>(slot)]);
    ggml_tensor * probs = ggml_soft_max_ext(ctx, ggml_mul_mat(ctx, keys, q), nullptr,
                                            1.0f / std::sqrt(static_cast<float>(d.head_dim)), 0.0f);
    ggml_tensor * attn = ggml_mul_mat(ctx, ggml_cont(ctx, ggml_permute(ctx, values, 1, 0, 2, 3)), probs);
    attn =
        ggml_reshape_3d(ctx, ggml_cont(ctx, ggml_permute(ctx, attn, 0, 2, 1, 3)), d.head_dim * d.n_heads, f, kCfgRows);
    x = ggml_add(ctx, x, ggml_mul(ctx, linear(ctx, attn, w.proj), part(gate_msa)));

    // Causal conv block; each conv sees the previous window's last two input frames of this step and block.
    const auto causal_conv = [&](ggml_tensor * input, const ConvWeights & cw, int channel_offset) {
        ggml_tensor * cache = cache_.est_conv;
        ggml_tensor * past = ggml_view_3d(
            ctx, cache, d.hidden, kDitConvFrames, kCfgRows, cache->nb[1], cache->nb[3],
            static_cast<size_t>(slot) * cache->nb[2] + static_cast<size_t>(channel_offset) * sizeof(float));
        ggml_tensor * ext = ggml_concat(ctx, past, input, 1);
        ggml_build_forward_expand(graph,
                                  ggml_cpy(ctx, rows(ctx, ext, ext->ne[1] - kDitConvFrames, kDitConvFrames), past));
        return conv1d(ctx, ext, cw);
    };
    h = causal_conv(modulate(x, shift_conv, scale_conv), w.conv1, 0);
    h = causal_conv(mish(ctx, layer_norm(ctx, h, w.conv_norm, kDitConvNormEps)), w.conv2, d.hidden);
    x = ggml_add(ctx, x, ggml_mul(ctx, h, part(gate_conv)));

    h = linear(ctx, gelu_tanh(ctx, linear(ctx, modulate(x, shift_mlp, scale_mlp), w.fc1), on_cpu_), w.fc2);
    return ggml_add(ctx, x, ggml_mul(ctx, h, part(gate_mlp)));
}

namespace {

std::vector<float> read_all(ggml_tensor * t) {
    std::vector<float> values(static_cast<size_t>(ggml_nelements(t)));
    ggml_backend_tensor_get(t, values.data(), 0, values.size() * sizeof(float));
    return values;
}

}  // namespace

FlowCaches Token2Mel::caches() const {
    const EncoderWeights & enc = weights_->encoder();
    const DitWeights & dit = weights_->dit();
    FlowCaches out;
    const std::vector<float> conv = read_all(cache_.conv);
    const int64_t conv_frames = cache_.conv->ne[1];
    out.conformer_cnn.resize(conv.size());
    for (int64_t t = 0; t < conv_frames; ++t) {
        for (int c = 0; c < enc.width; ++c) out.conformer_cnn[c * conv_frames + t] = conv[t * enc.width + c];
    }
    const size_t hd = static_cast<size_t>(enc.head_dim), mel_len = 2 * static_cast<size_t>(token_len_);
    out.conformer_att.resize(cache_.enc_k.size() * enc.n_heads * mel_len * 2 * hd);
    for (size_t layer = 0; layer < cache_.enc_k.size(); ++layer) {
        const std::vector<float> k = read_all(cache_.enc_k[layer]), v = read_all(cache_.enc_v[layer]);
        const bool token_rate = layer < enc.token_layers.size();
        for (int h = 0; h < enc.n_heads; ++h) {
            for (size_t t = 0; t < mel_len; ++t) {
                const size_t src = (token_rate ? t % token_len_ : t) * enc.width + h * hd;  // token layers: [c ; c]
                float * dst = out.conformer_att.data() + ((layer * enc.n_heads + h) * mel_len + t) * 2 * hd;
                std::copy_n(k.data() + src, hd, dst);
                std::copy_n(v.data() + src, hd, dst + hd);
            }
        }
    }
    const size_t hidden2 = 2 * static_cast<size_t>(dit.hidden), slots = cache_.est_k.size();
    const std::vector<float> est_conv = read_all(cache_.est_conv);
    out.estimator_cnn.resize(est_conv.size());
    for (size_t slot = 0; slot < slots; ++slot) {
        for (size_t row = 0; row < kCfgRows; ++row) {
            for (size_t t = 0; t < kDitConvFrames; ++t) {
                for (size_t ch = 0; ch < hidden2; ++ch) {
                    out.estimator_cnn[((slot * kCfgRows + row) * hidden2 + ch) * kDitConvFrames + t] =
                        est_conv[((row * slots + slot) * kDitConvFrames + t) * hidden2 + ch];
                }
            }
        }
    }
    // Newest first, like the reference: the generated chunks from the newest back, then the prompt.
    std::vector<int> order;
    int end = est_len_;
    for (auto chunk = est_chunks_.rbegin(); chunk != est_chunks_.rend(); ++chunk) {
        for (int t = end - *chunk; t < end; ++t) order.push_back(t);
        end -= *chunk;
    }
    for (int t = 0; t < end; ++t) order.push_back(t);
    const size_t dhd = static_cast<size_t>(dit.head_dim), n = order.size();
    out.estimator_att.resize(slots * kCfgRows * dit.n_heads * n * 2 * dhd);
    for (size_t slot = 0; slot < slots; ++slot) {
        const std::vector<float> k = read_all(cache_.est_k[slot]), v = read_all(cache_.est_v[slot]);
        for (size_t row = 0; row < kCfgRows; ++row) {
            for (size_t h = 0; h < static_cast<size_t>(dit.n_heads); ++h) {
                for (size_t j = 0; j < n; ++j) {
                    const size_t src = ((row * dit.n_heads + h) * est_capacity_ + order[j]) * dhd;
                    float * dst =
                        out.estimator_att.data() + (((slot * kCfgRows + row) * dit.n_heads + h) * n + j) * 2 * dhd;
                    std::copy_n(k.data() + src, dhd, dst);
                    std::copy_n(v.data() + src, dhd, dst + dhd);
                }
            }
        }
    }
    return out;
}

}  // namespace omni

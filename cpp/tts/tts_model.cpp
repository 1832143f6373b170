#include "tts/tts_model.h"

#include <cmath>
#include <fstream>
#include <limits>

#include "core/errors.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace omni {
namespace {

// F.normalize's default epsilon, which the PyTorch reference uses (the C++ reference puts 1e-8 under the root).
constexpr float kNormalizeEps = 1e-12f;
const char * const kProjectorNames[] = {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"};

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, ggml_mul_mat(ctx, w, x), b);
}

bool file_exists(const std::string & path) {
    return !path.empty() && std::ifstream(path).good();
}

WeightFileOptions tts_file_options(bool projector_elsewhere) {
    WeightFileOptions options;
    options.skip = {"token_embd.weight"};  // the backbone's unused embedding table (the TTS is fed embeddings)
    for (const char * name : kProjectorNames) {
        options.skip.push_back(std::string("projector_spk.") + name);  // unused at inference (pipeline.md §7.1)
        if (projector_elsewhere) options.skip.push_back(std::string("projector_semantic.") + name);
    }
    options.host = {"emb_text.weight", "emb_code.0.weight", "head_code.0.weight"};
    return options;
}

}  // namespace

Tts::Tts(const TtsOptions & options) : path_(options.path) {
    backend_ = std::make_unique<Backend>(BackendOptions{options.use_gpu, options.n_threads});
    const bool projector_elsewhere = file_exists(options.projector_path);
    weights_ = std::make_unique<WeightFile>(options.path, backend_->get(), tts_file_options(projector_elsewhere));
    read_hyperparameters(weights_->meta());
    n_ctx_ = options.n_ctx > 0 ? options.n_ctx : n_ctx_train_;
    if (projector_elsewhere) {
        projector_file_ = std::make_unique<WeightFile>(options.projector_path, backend_->get());
    }
    load_projector(options);
    const WeightFile & w = *weights_;
    const int d = n_embd_;
    n_text_ = static_cast<int>(w.meta().tensor("emb_text.weight").ne.back());
    n_codes_ = static_cast<int>(w.meta().tensor("emb_code.0.weight").ne.back());
    emb_text_ = &w.host("emb_text.weight", {d, n_text_});
    emb_code_ = &w.host("emb_code.0.weight", {d, n_codes_});
    output_norm_ = w.get("output_norm.weight", {d});
    for (int i = 0; i < n_layer_; ++i) {
        const std::string p = "blk." + std::to_string(i) + ".";
        const int d_kv = head_dim_ * n_head_kv_;
        layers_.push_back(Layer{
            w.get(p + "attn_norm.weight", {d}),
            w.get(p + "attn_q.weight", {d, head_dim_ * n_head_}),
            w.get(p + "attn_k.weight", {d, d_kv}),
            w.get(p + "attn_v.weight", {d, d_kv}),
            w.get(p + "attn_output.weight", {head_dim_ * n_head_, d}),
            w.get(p + "ffn_norm.weight", {d}),
            w.get(p + "ffn_gate.weight", {d, n_ff_}),
            w.get(p + "ffn_up.weight", {d, n_ff_}),
            w.get(p + "ffn_down.weight", {n_ff_, d}),
        });
    }
    allocate_cache();
    load_head_code();
    runner_ = std::make_unique<GraphRunner>(backend_->get(), 256 + static_cast<size_t>(n_layer_) * 64);
    reserve_compute();
}

Tts::~Tts() {
    runner_.reset();
    if (own_buffer_) ggml_backend_buffer_free(own_buffer_);
    if (own_ctx_) ggml_free(own_ctx_);
}

void Tts::read_hyperparameters(const GgufFile & meta) {
    const std::string arch = meta.get_string("general.architecture");
    if (arch != "llama") {
        throw ModelFileError(meta.path() + ": general.architecture is '" + arch + "', expected 'llama' (TTS)");
    }
    n_layer_ = static_cast<int>(meta.get_u32("llama.block_count"));
    n_embd_ = static_cast<int>(meta.get_u32("llama.embedding_length"));
    n_ff_ = static_cast<int>(meta.get_u32("llama.feed_forward_length"));
    n_head_ = static_cast<int>(meta.get_u32("llama.attention.head_count"));
    n_head_kv_ = static_cast<int>(meta.get_u32_or("llama.attention.head_count_kv", static_cast<uint32_t>(n_head_)));
    n_ctx_train_ = static_cast<int>(meta.get_u32("llama.context_length"));
    rope_base_ = meta.has_key("llama.rope.freq_base") ? meta.get_f32("llama.rope.freq_base") : 10000.0f;
    rms_eps_ = meta.get_f32("llama.attention.layer_norm_rms_epsilon");
    if (n_head_ <= 0 || n_embd_ % n_head_ != 0 || n_head_kv_ <= 0 || n_head_ % n_head_kv_ != 0) {
        throw ModelFileError(meta.path() + ": llama.embedding_length " + std::to_string(n_embd_) +
                             " and the head counts " + std::to_string(n_head_) + "/" + std::to_string(n_head_kv_) +
                             " do not fit together");
    }
    head_dim_ = n_embd_ / n_head_;
    n_rot_ = static_cast<int>(meta.get_u32_or("llama.rope.dimension_count", static_cast<uint32_t>(head_dim_)));
}

void Tts::load_projector(const TtsOptions & options) {
    const WeightFile & source = projector_file_ ? *projector_file_ : *weights_;
    const std::string prefix = projector_file_ ? "" : "projector_semantic.";
    if (projector_file_) {
        const std::string arch = source.meta().get_string("general.architecture");
        if (arch != "projector") {
            throw ModelFileError(options.projector_path + ": general.architecture is '" + arch +
                                 "', expected 'projector'");
        }
    }
    projector_source_ = projector_file_ ? "projector file" : "tts file";
    n_llm_embd_ = static_cast<int>(source.meta().tensor(prefix + "linear1.weight").ne.front());
    projector_.w1 = source.get(prefix + "linear1.weight", {n_llm_embd_, n_embd_});
    projector_.b1 = source.get(prefix + "linear1.bias", {n_embd_});
    projector_.w2 = source.get(prefix + "linear2.weight", {n_embd_, n_embd_});
    projector_.b2 = source.get(prefix + "linear2.bias", {n_embd_});
}

void Tts::allocate_cache() {
    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * (2 * static_cast<size_t>(n_layer_) + 2);
    params.no_alloc = true;
    own_ctx_ = ggml_init(params);
    if (!own_ctx_) throw EngineError("could not create the TTS cache context");
    const int d_kv = head_dim_ * n_head_kv_;
    for (int i = 0; i < n_layer_; ++i) {
        k_cache_.push_back(ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, d_kv, n_ctx_));
        v_cache_.push_back(ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, d_kv, n_ctx_));
    }
    head_ = ggml_new_tensor_2d(own_ctx_, GGML_TYPE_F32, n_embd_, n_codes_);
    own_buffer_ = ggml_backend_alloc_ctx_tensors(own_ctx_, backend_->get());
    if (!own_buffer_) throw EngineError("out of memory allocating the TTS KV cache");
}

// head_code.0.weight is stored (codes, hidden) with element (c, h) at h * codes + c; the matmul wants a row per
// code, so it is transposed once here.
void Tts::load_head_code() {
    const HostTensor & stored = weights_->host("head_code.0.weight", {n_codes_, n_embd_});
    std::vector<float> rows(stored.data.size());
    for (int h = 0; h < n_embd_; ++h) {
        for (int c = 0; c < n_codes_; ++c) {
            rows[static_cast<size_t>(c) * n_embd_ + h] = stored.data[static_cast<size_t>(h) * n_codes_ + c];
        }
    }
    ggml_backend_tensor_set(head_, rows.data(), 0, rows.size() * sizeof(float));
}

const float * Tts::text_row(int id) const {
    if (id < 0 || id >= n_text_) {
        throw StateError("TTS text id " + std::to_string(id) + " is outside emb_text (" + std::to_string(n_text_) +
                         " rows)");
    }
    return emb_text_->data.data() + static_cast<size_t>(id) * n_embd_;
}

const float * Tts::code_row(int code) const {
    if (code < 0 || code >= n_codes_) {
        throw StateError("speech code " + std::to_string(code) + " is outside emb_code (" + std::to_string(n_codes_) +
                         " rows)");
    }
    return emb_code_->data.data() + static_cast<size_t>(code) * n_embd_;
}

std::vector<float> Tts::condition(const std::vector<int> & ids, const float * hidden) {
    const int n = static_cast<int>(ids.size());
    std::vector<float> text(static_cast<size_t>(n) * n_embd_);
    for (int i = 0; i < n; ++i) {
        std::copy_n(text_row(ids[static_cast<size_t>(i)]), n_embd_, text.begin() + static_cast<long>(i) * n_embd_);
    }
    if (n == 0) return text;
    ggml_tensor *hidden_in = nullptr, *text_in = nullptr, *out = nullptr;
    runner_->run(
        [&](ggml_context * ctx) {
            hidden_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_llm_embd_, n);
            text_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_embd_, n);
            ggml_set_input(hidden_in);
            ggml_set_input(text_in);
            ggml_tensor * p = linear(ctx, ggml_relu(ctx, linear(ctx, hidden_in, projector_.w1, projector_.b1)),
                                     projector_.w2, projector_.b2);
            out = ggml_add(ctx, text_in, ggml_l2_norm(ctx, p, kNormalizeEps));
            ggml_set_output(out);
            ggml_cgraph * graph = ggml_new_graph(ctx);
            ggml_build_forward_expand(graph, out);
            return graph;
        },
        [&] {
            ggml_backend_tensor_set(hidden_in, hidden, 0, ggml_nbytes(hidden_in));
            ggml_backend_tensor_set(text_in, text.data(), 0, ggml_nbytes(text_in));
        });
    ggml_backend_tensor_get(out, text.data(), 0, text.size() * sizeof(float));
    return text;
}

Tts::ForwardGraph Tts::build_forward(ggml_context * ctx, int n_past, int n, bool all_logits) {
    ForwardGraph g;
    g.graph = ggml_new_graph_custom(ctx, 256 + static_cast<size_t>(n_layer_) * 64, false);
    g.input = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_embd_, n);
    g.positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    ggml_set_input(g.input);
    ggml_set_input(g.positions);
    if (n > 1) {
        g.mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_past + n, n);
        ggml_set_input(g.mask);
    }
    ggml_tensor * x = g.input;
    for (size_t i = 0; i < layers_.size(); ++i) x = build_layer(ctx, g.graph, x, i, g.positions, g.mask, n_past, n);
    x = ggml_mul(ctx, ggml_rms_norm(ctx, x, rms_eps_), output_norm_);
    if (!all_logits && n > 1) x = ggml_view_2d(ctx, x, n_embd_, 1, x->nb[1], x->nb[1] * (n - 1));
    g.logits = ggml_mul_mat(ctx, head_, x);
    ggml_set_output(g.logits);
    ggml_build_forward_expand(g.graph, g.logits);
    return g;
}

// The largest graphs the stage runs while speaking: one code at a full cache, and a text chunk's condition.
void Tts::reserve_compute() {
    const int chunk_rows = 16;
    runner_->reserve([&](ggml_context * ctx) { return build_forward(ctx, n_ctx_ - 1, 1, false).graph; });
    if (n_ctx_ > chunk_rows) {
        runner_->reserve(
            [&](ggml_context * ctx) { return build_forward(ctx, n_ctx_ - chunk_rows, chunk_rows, false).graph; });
    }
}

std::vector<float> Tts::forward(const float * rows, int n, bool all_logits) {
    if (n <= 0) throw StateError("TTS forward needs at least one row");
    if (n_past_ + n > n_ctx_) {
        throw StateError("the TTS context is full (" + std::to_string(n_past_) + " + " + std::to_string(n) + " > " +
                         std::to_string(n_ctx_) + " positions)");
    }
    const int n_kv = n_past_ + n;
    ForwardGraph g;
    runner_->run([&](ggml_context * ctx) { return (g = build_forward(ctx, n_past_, n, all_logits)).graph; },
                 [&] {
                     ggml_backend_tensor_set(g.input, rows, 0, ggml_nbytes(g.input));
                     std::vector<int32_t> pos(static_cast<size_t>(n));
                     for (int i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = n_past_ + i;
                     ggml_backend_tensor_set(g.positions, pos.data(), 0, ggml_nbytes(g.positions));
                     if (g.mask) {
                         std::vector<float> causal(static_cast<size_t>(n_kv) * n, 0.0f);
                         for (int i = 0; i < n; ++i) {
                             for (int j = n_past_ + i + 1; j < n_kv; ++j) {
                                 causal[static_cast<size_t>(i) * n_kv + j] = -std::numeric_limits<float>::infinity();
                             }
                         }
                         ggml_backend_tensor_set(g.mask, causal.data(), 0, ggml_nbytes(g.mask));
                     }
                 });
    n_past_ = n_kv;
    std::vector<float> out(static_cast<size_t>(ggml_nelements(g.logits)));
    ggml_backend_tensor_get(g.logits, out.data(), 0, out.size() * sizeof(float));
    return out;
}

// This step's keys or values after the cached ones of earlier steps (one row per position). The step's rows are
// also copied into the cache, at positions this graph does not read, so the copy needs no ordering.
ggml_tensor * Tts::with_past(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * fresh, ggml_tensor * cache,
                             int n_past) {
    const int64_t width = fresh->ne[0];
    const size_t row = cache->nb[1];
    ggml_build_forward_expand(
        graph,
        ggml_cpy(ctx, fresh, ggml_view_2d(ctx, cache, width, fresh->ne[1], row, row * static_cast<size_t>(n_past))));
    if (n_past == 0) return fresh;
    return ggml_concat(ctx, ggml_view_2d(ctx, cache, width, n_past, row, 0), fresh, 1);
}

// One pre-norm block with causal attention over the cached positions and this step's.
ggml_tensor * Tts::build_layer(ggml_context * ctx, ggml_cgraph * graph, ggml_tensor * x, size_t index,
                               ggml_tensor * positions, ggml_tensor * mask, int n_past, int n) {
    const Layer & layer = layers_[index];
    const int d_kv = head_dim_ * n_head_kv_;
    const int n_kv = n_past + n;
    ggml_tensor * h = ggml_mul(ctx, ggml_rms_norm(ctx, x, rms_eps_), layer.attn_norm);
    // The file's q/k rows are permuted for the interleaved (NORM) rope, which equals rotate-half on HF weights.
    const auto rope = [&](ggml_tensor * t) {
        return ggml_rope_ext(ctx, t, positions, nullptr, n_rot_, 0, n_ctx_train_, rope_base_, 1.0f, 0.0f, 1.0f, 0.0f,
                             0.0f);
    };
    ggml_tensor * q = rope(ggml_reshape_3d(ctx, ggml_mul_mat(ctx, layer.wq, h), head_dim_, n_head_, n));
    ggml_tensor * k = rope(ggml_reshape_3d(ctx, ggml_mul_mat(ctx, layer.wk, h), head_dim_, n_head_kv_, n));
    ggml_tensor * k_all = with_past(ctx, graph, ggml_reshape_2d(ctx, k, d_kv, n), k_cache_[index], n_past);
    ggml_tensor * v_all = with_past(ctx, graph, ggml_mul_mat(ctx, layer.wv, h), v_cache_[index], n_past);

    ggml_tensor * keys = ggml_permute(ctx, ggml_reshape_3d(ctx, k_all, head_dim_, n_head_kv_, n_kv), 0, 2, 1, 3);
    ggml_tensor * values =
        ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v_all, head_dim_, n_head_kv_, n_kv), 1, 2, 0, 3));
    q = ggml_permute(ctx, q, 0, 2, 1, 3);               // (head_dim, n, heads)
    ggml_tensor * scores = ggml_mul_mat(ctx, keys, q);  // (n_kv, n, heads)
    scores = ggml_soft_max_ext(ctx, scores, mask, 1.0f / std::sqrt(static_cast<float>(head_dim_)), 0.0f);
    ggml_tensor * attn = ggml_mul_mat(ctx, values, scores);      // (head_dim, n, heads)
    attn = ggml_cont(ctx, ggml_permute(ctx, attn, 0, 2, 1, 3));  // (head_dim, heads, n)
    attn = ggml_reshape_2d(ctx, attn, head_dim_ * n_head_, n);
    x = ggml_add(ctx, x, ggml_mul_mat(ctx, layer.wo, attn));

    h = ggml_mul(ctx, ggml_rms_norm(ctx, x, rms_eps_), layer.ffn_norm);
    h = ggml_mul(ctx, ggml_silu(ctx, ggml_mul_mat(ctx, layer.gate, h)), ggml_mul_mat(ctx, layer.up, h));
    return ggml_add(ctx, x, ggml_mul_mat(ctx, layer.down, h));
}

}  // namespace omni

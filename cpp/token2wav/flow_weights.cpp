#include "token2wav/flow_weights.h"

#include "core/errors.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace omni {
namespace {

constexpr int kDitConvKernel = 3;
constexpr int kLookaheadConv2Kernel = 3;

int64_t dim(const GgufFile & meta, const std::string & name, size_t axis) {
    const TensorInfo info = meta.tensor(name);
    return axis < info.ne.size() ? info.ne[axis] : 1;
}

int count_blocks(const GgufFile & meta, const std::string & prefix, const std::string & suffix) {
    int n = 0;
    while (meta.has_tensor(prefix + std::to_string(n) + suffix)) ++n;
    return n;
}

LinearWeights linear(const WeightFile & f, const std::string & name, int64_t n_in, int64_t n_out, bool bias = true) {
    return {f.get(name + ".weight", {n_in, n_out}), bias ? f.get(name + ".bias", {n_out}) : nullptr};
}

NormWeights norm(const WeightFile & f, const std::string & name, int64_t width) {
    return {f.get(name + ".weight", {width}), f.get(name + ".bias", {width})};
}

std::vector<std::string> encoder_conv_names() {
    return {"pre_lookahead_layer.conv1.weight", "pre_lookahead_layer.conv2.weight", "up_layer.conv.weight"};
}

std::vector<std::string> dit_conv_names(int depth) {
    std::vector<std::string> names;
    for (int i = 0; i < depth; ++i) {
        const std::string p = "estimator.blocks." + std::to_string(i) + ".conv.block.";
        names.push_back(p + "1.weight");
        names.push_back(p + "6.weight");
    }
    return names;
}

}  // namespace

std::string path_in(const std::string & folder, const char * file) {
    return folder.empty() || folder.back() == '/' ? folder + file : folder + "/" + file;
}

FlowWeights::FlowWeights(const std::string & folder, ggml_backend * backend) : backend_(backend) {
    load_encoder(path_in(folder, "encoder.gguf"));
    load_dit(path_in(folder, "flow_matching.gguf"));
    load_extra(path_in(folder, "flow_extra.gguf"));
    upload_convs();
}

FlowWeights::~FlowWeights() {
    if (conv_buffer_) ggml_backend_buffer_free(conv_buffer_);
    if (conv_ctx_) ggml_free(conv_ctx_);
}

ConvWeights FlowWeights::conv(const WeightFile & file, const std::string & name, int c_in, int c_out, int kernel) {
    if (!conv_ctx_) {
        ggml_init_params params{};
        params.mem_size = ggml_tensor_overhead() * 128;
        params.no_alloc = true;
        conv_ctx_ = ggml_init(params);
        if (!conv_ctx_) throw EngineError("could not create the flow conv context");
    }
    const HostTensor & source = file.host(name + ".weight", {kernel, c_in, c_out});
    ggml_tensor * unfolded = ggml_new_tensor_2d(conv_ctx_, GGML_TYPE_F32, static_cast<int64_t>(c_in) * kernel, c_out);
    pending_.push_back({unfolded, &source, c_in, c_out, kernel});
    return {unfolded, file.get(name + ".bias", {c_out}), kernel};
}

// The files hold (C_out, C_in, K) with element (co, c, k) at k + K * (c + C_in * co); the unfolded input has row
// c + C_in * k, so each kernel is re-ordered once here.
void FlowWeights::upload_convs() {
    conv_buffer_ = ggml_backend_alloc_ctx_tensors(conv_ctx_, backend_);
    if (!conv_buffer_) throw EngineError("out of memory allocating the flow conv weights");
    for (const PendingConv & p : pending_) {
        std::vector<float> unfolded(p.source->data.size());
        for (int co = 0; co < p.c_out; ++co) {
            for (int c = 0; c < p.c_in; ++c) {
                for (int k = 0; k < p.kernel; ++k) {
                    const size_t from = k + static_cast<size_t>(p.kernel) * (c + static_cast<size_t>(p.c_in) * co);
                    const size_t to = c + static_cast<size_t>(p.c_in) * (k + static_cast<size_t>(p.kernel) * co);
                    unfolded[to] = p.source->data[from];
                }
            }
        }
        ggml_backend_tensor_set(p.tensor, unfolded.data(), 0, unfolded.size() * sizeof(float));
    }
    pending_.clear();
}

ConformerLayerWeights FlowWeights::conformer_layer(const WeightFile & f, const std::string & prefix) const {
    const EncoderWeights & e = encoder_;
    const int64_t w = e.width;
    const int64_t units = dim(f.meta(), prefix + "feed_forward.w_1.weight", 1);
    const std::string attn = prefix + "self_attn.";
    ConformerLayerWeights layer;
    layer.norm_mha = norm(f, prefix + "norm_mha", w);
    layer.norm_ff = norm(f, prefix + "norm_ff", w);
    layer.q = linear(f, attn + "linear_q", w, w);
    layer.k = linear(f, attn + "linear_k", w, w);
    layer.v = linear(f, attn + "linear_v", w, w);
    layer.out = linear(f, attn + "linear_out", w, w);
    layer.pos = linear(f, attn + "linear_pos", w, w, false);
    layer.pos_bias_u = f.get(attn + "pos_bias_u", {e.head_dim, e.n_heads});
    layer.pos_bias_v = f.get(attn + "pos_bias_v", {e.head_dim, e.n_heads});
    layer.ff1 = linear(f, prefix + "feed_forward.w_1", w, units);
    layer.ff2 = linear(f, prefix + "feed_forward.w_2", units, w);
    return layer;
}

void FlowWeights::load_encoder(const std::string & path) {
    WeightFileOptions options;
    options.host = encoder_conv_names();
    encoder_file_ = std::make_unique<WeightFile>(path, backend_, options);
    const WeightFile & f = *encoder_file_;
    EncoderWeights & e = encoder_;
    e.width = static_cast<int>(dim(f.meta(), "embed.out.0.weight", 0));
    e.head_dim = static_cast<int>(dim(f.meta(), "encoders.0.self_attn.pos_bias_u", 0));
    e.n_heads = static_cast<int>(dim(f.meta(), "encoders.0.self_attn.pos_bias_u", 1));
    if (e.n_heads * e.head_dim != e.width) {
        throw ModelFileError(path + ": pos_bias_u (" + std::to_string(e.head_dim) + " x " + std::to_string(e.n_heads) +
                             ") does not split the width " + std::to_string(e.width));
    }
    const int lookahead_kernel = static_cast<int>(dim(f.meta(), "pre_lookahead_layer.conv1.weight", 0));
    const int up_kernel = static_cast<int>(dim(f.meta(), "up_layer.conv.weight", 0));
    if (lookahead_kernel < 2 || up_kernel < 3 || up_kernel % 2 == 0) {
        throw ModelFileError(path + ": unexpected conv kernels (pre-lookahead " + std::to_string(lookahead_kernel) +
                             ", up " + std::to_string(up_kernel) + ")");
    }
    e.lookahead = lookahead_kernel - 1;
    e.up_stride = (up_kernel - 1) / 2;
    const int64_t w = e.width;
    e.embed = linear(f, "embed.out.0", w, w);
    e.embed_norm = norm(f, "embed.out.1", w);
    e.lookahead_conv1 = conv(f, "pre_lookahead_layer.conv1", e.width, e.width, lookahead_kernel);
    e.lookahead_conv2 = conv(f, "pre_lookahead_layer.conv2", e.width, e.width, kLookaheadConv2Kernel);
    e.up_conv = conv(f, "up_layer.conv", e.width, e.width, up_kernel);
    const int n_token_layers = count_blocks(f.meta(), "encoders.", ".norm_mha.weight");
    const int n_mel_layers = count_blocks(f.meta(), "up_encoders.", ".norm_mha.weight");
    for (int i = 0; i < n_token_layers; ++i)
        e.token_layers.push_back(conformer_layer(f, "encoders." + std::to_string(i) + "."));
    for (int i = 0; i < n_mel_layers; ++i) {
        e.mel_layers.push_back(conformer_layer(f, "up_encoders." + std::to_string(i) + "."));
    }
    e.up_embed = linear(f, "up_embed.out.0", w, w);
    e.up_embed_norm = norm(f, "up_embed.out.1", w);
    e.after_norm = norm(f, "after_norm", w);
}

void FlowWeights::load_dit(const std::string & path) {
    const int depth = count_blocks(GgufFile(path), "estimator.blocks.", ".attn.to_q.weight");
    WeightFileOptions options;
    options.host = dit_conv_names(depth);
    dit_file_ = std::make_unique<WeightFile>(path, backend_, options);
    const WeightFile & f = *dit_file_;
    DitWeights & d = dit_;
    d.hidden = static_cast<int>(dim(f.meta(), "estimator.in_proj.weight", 1));
    d.n_mels = static_cast<int>(dim(f.meta(), "estimator.final_layer.linear.weight", 1));
    d.time_embd = static_cast<int>(dim(f.meta(), "estimator.t_embedder.mlp.0.weight", 0));
    d.head_dim = static_cast<int>(dim(f.meta(), "estimator.blocks.0.attn.q_norm.weight", 0));
    const int attn_width = static_cast<int>(dim(f.meta(), "estimator.blocks.0.attn.to_q.weight", 1));
    if (depth == 0 || d.head_dim == 0 || attn_width % d.head_dim != 0) {
        throw ModelFileError(path + ": the DiT blocks do not fit together (depth " + std::to_string(depth) + ")");
    }
    d.n_heads = attn_width / d.head_dim;
    const int64_t h = d.hidden, a = attn_width;
    d.t_mlp0 = linear(f, "estimator.t_embedder.mlp.0", d.time_embd, h);
    d.t_mlp2 = linear(f, "estimator.t_embedder.mlp.2", h, h);
    d.in_proj = linear(f, "estimator.in_proj", 4 * static_cast<int64_t>(d.n_mels), h);
    d.final_adaln = linear(f, "estimator.final_layer.adaLN_modulation.1", h, 2 * h);
    d.final_linear = linear(f, "estimator.final_layer.linear", h, d.n_mels);
    for (int i = 0; i < depth; ++i) {
        const std::string p = "estimator.blocks." + std::to_string(i) + ".";
        const int64_t mlp = dim(f.meta(), p + "mlp.fc1.weight", 1);
        DitBlockWeights b;
        b.q = linear(f, p + "attn.to_q", h, a);
        b.k = linear(f, p + "attn.to_k", h, a);
        b.v = linear(f, p + "attn.to_v", h, a);
        b.proj = linear(f, p + "attn.proj", a, h);
        b.q_norm = norm(f, p + "attn.q_norm", d.head_dim);
        b.k_norm = norm(f, p + "attn.k_norm", d.head_dim);
        b.fc1 = linear(f, p + "mlp.fc1", h, mlp);
        b.fc2 = linear(f, p + "mlp.fc2", mlp, h);
        b.adaln = linear(f, p + "adaLN_modulation.1", h, 9 * h);
        b.conv1 = conv(f, p + "conv.block.1", d.hidden, d.hidden, kDitConvKernel);
        b.conv_norm = norm(f, p + "conv.block.3", h);
        b.conv2 = conv(f, p + "conv.block.6", d.hidden, d.hidden, kDitConvKernel);
        d.blocks.push_back(b);
    }
}

void FlowWeights::load_extra(const std::string & path) {
    WeightFileOptions options;
    options.host = {"spk_embed_affine_layer.weight", "spk_embed_affine_layer.bias"};
    extra_file_ = std::make_unique<WeightFile>(path, backend_, options);
    const WeightFile & f = *extra_file_;
    const int64_t w = encoder_.width;
    n_tokens_ = static_cast<int>(dim(f.meta(), "input_embedding.weight", 1));
    token_embedding_ = f.get("input_embedding.weight", {w, n_tokens_});
    spk_dim_ = static_cast<int>(dim(f.meta(), "spk_embed_affine_layer.weight", 0));
    spk_w_ = &f.host("spk_embed_affine_layer.weight", {spk_dim_, dit_.n_mels});
    spk_b_ = &f.host("spk_embed_affine_layer.bias", {dit_.n_mels});
    encoder_proj_ = linear(f, "encoder_proj", w, dit_.n_mels);
}

}  // namespace omni

// The mel generator's weights (token2wav.md §7.1): encoder.gguf (UpsampleConformerEncoderV2), flow_matching.gguf
// (the DiT velocity estimator) and flow_extra.gguf (token embedding, speaker affine, encoder projection). The
// files carry no hyperparameters; every size is read from the tensor shapes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/weights.h"

struct ggml_context;
struct ggml_tensor;
struct ggml_backend;
struct ggml_backend_buffer;

namespace omni {

struct LinearWeights {
    ggml_tensor * w = nullptr;
    ggml_tensor * b = nullptr;  // null: no bias
};

struct NormWeights {
    ggml_tensor * w = nullptr;
    ggml_tensor * b = nullptr;
};

// A Conv1d as one matrix product over an unfolded input: w is (C_in * K, C_out) with row index c + C_in * k.
struct ConvWeights {
    ggml_tensor * w = nullptr;
    ggml_tensor * b = nullptr;
    int kernel = 0;
};

struct ConformerLayerWeights {
    NormWeights norm_mha, norm_ff;
    LinearWeights q, k, v, out, pos, ff1, ff2;
    ggml_tensor * pos_bias_u = nullptr;  // (head_dim, heads)
    ggml_tensor * pos_bias_v = nullptr;
};

struct EncoderWeights {
    int width = 0;
    int n_heads = 0;
    int head_dim = 0;
    int lookahead = 0;  // pre-lookahead conv1 kernel - 1
    int up_stride = 0;  // up conv kernel = 2 * stride + 1
    LinearWeights embed;
    NormWeights embed_norm;
    ConvWeights lookahead_conv1, lookahead_conv2, up_conv;
    std::vector<ConformerLayerWeights> token_layers, mel_layers;
    LinearWeights up_embed;
    NormWeights up_embed_norm, after_norm;
};

struct DitBlockWeights {
    LinearWeights q, k, v, proj, fc1, fc2, adaln;
    NormWeights q_norm, k_norm, conv_norm;
    ConvWeights conv1, conv2;
};

struct DitWeights {
    int hidden = 0;
    int n_heads = 0;
    int head_dim = 0;
    int n_mels = 0;
    int time_embd = 0;  // sinusoidal timestep embedding size
    LinearWeights t_mlp0, t_mlp2, in_proj, final_adaln, final_linear;
    std::vector<DitBlockWeights> blocks;
};

// `folder`/`file`.
std::string path_in(const std::string & folder, const char * file);

class FlowWeights {
public:
    // Loads the three files of `folder` onto `backend`; ModelFileError names the file and tensor on a mismatch.
    FlowWeights(const std::string & folder, ggml_backend * backend);
    ~FlowWeights();
    FlowWeights(const FlowWeights &) = delete;
    FlowWeights & operator=(const FlowWeights &) = delete;

    const EncoderWeights & encoder() const { return encoder_; }
    const DitWeights & dit() const { return dit_; }
    ggml_tensor * token_embedding() const { return token_embedding_; }
    int n_tokens() const { return n_tokens_; }
    int n_mels() const { return dit_.n_mels; }
    LinearWeights encoder_proj() const { return encoder_proj_; }
    // spk_embed_affine_layer in host memory: (spk_dim x n_mels) weight and the bias.
    const HostTensor & spk_affine_w() const { return *spk_w_; }
    const HostTensor & spk_affine_b() const { return *spk_b_; }
    int spk_dim() const { return spk_dim_; }

private:
    void load_encoder(const std::string & path);
    void load_dit(const std::string & path);
    void load_extra(const std::string & path);
    ConformerLayerWeights conformer_layer(const WeightFile & file, const std::string & prefix) const;
    // Reserves a slot for a conv weight read from the host copy and permuted into the unfold layout.
    ConvWeights conv(const WeightFile & file, const std::string & name, int c_in, int c_out, int kernel);
    void upload_convs();

    ggml_backend * backend_;
    std::unique_ptr<WeightFile> encoder_file_, dit_file_, extra_file_;
    EncoderWeights encoder_;
    DitWeights dit_;
    ggml_tensor * token_embedding_ = nullptr;
    LinearWeights encoder_proj_;
    const HostTensor * spk_w_ = nullptr;
    const HostTensor * spk_b_ = nullptr;
    int n_tokens_ = 0;
    int spk_dim_ = 0;
    // Conv weights in the unfold layout, made here from the files' (C_out, C_in, K) tensors.
    struct PendingConv {
        ggml_tensor * tensor;
        const HostTensor * source;
        int c_in, c_out, kernel;
    };
    std::vector<PendingConv> pending_;
    ggml_context * conv_ctx_ = nullptr;
    ggml_backend_buffer * conv_buffer_ = nullptr;
};

}  // namespace omni

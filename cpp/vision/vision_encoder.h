// The vision stage: the official vision GGUF (model-files.md §4, libmtmd's MiniCPM-V "resampler" layout), the
// SigLIP ViT and the perceiver resampler: an RGB image in, chunks of n_query (64) LLM rows out — the overview
// first, then the slices row-major (pipeline.md §5).
//
// Our own graph rather than libmtmd's CLIP encoder, although libmtmd loads the file unchanged and computes the
// same arithmetic (tests/parity/test_vision_libmtmd.py): libmtmd runs every block of the file while the PyTorch
// model drops the last of its 27 (model-files.md §4.7) and offers no layer count; on the CPU its patch embedding
// and GELU round through F16 (1-2e-4 off PyTorch on an F32 file, against ~1e-6 here); and clip.h is an
// internal header of mtmd.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/compute.h"
#include "core/weights.h"
#include "vision/image_preprocess.h"

struct ggml_context;
struct ggml_tensor;

namespace omni {

struct VisionEncoderOptions {
    std::string path;
    bool use_gpu = false;
    int n_threads = 0;
    // ViT layers to run. 0: as the PyTorch model, which builds its ViT with the configured 27 layers and drops
    // the last one (model-files.md §4.7): a 27-layer file runs 26, any other count runs all of them.
    int n_layers = 0;
};

// The layers `requested` (0 = auto, see VisionEncoderOptions) out of a file's `in_file`; invalid_argument if
// the request is negative or larger than the file.
int vision_layers_to_run(int requested, int in_file);

struct EncodedImage {
    SlicePlan plan;
    std::vector<std::vector<float>> chunks;  // each n_query x n_embd_out, row-major; overview first
};

class VisionEncoder {
public:
    explicit VisionEncoder(const VisionEncoderOptions & options);
    ~VisionEncoder();
    VisionEncoder(const VisionEncoder &) = delete;
    VisionEncoder & operator=(const VisionEncoder &) = delete;

    int n_embd_out() const { return n_out_; }
    int n_query() const { return n_query_; }
    int image_size() const { return image_size_; }  // slice / scale resolution (448 in the release)
    int patch_size() const { return patch_; }
    int n_layers() const { return static_cast<int>(layers_.size()); }
    int n_layers_in_file() const { return n_layer_file_; }
    const std::string & backend_name() const { return backend_->name(); }

    // One preprocessed chunk (planar, sides multiples of the patch) -> n_query x n_embd_out rows.
    std::vector<float> encode_chunk(const ImageChunk & chunk);
    // Chunks of one size (an image's slices) in one graph, as a batch; the rows of each, in order.
    std::vector<std::vector<float>> encode_same_size_chunks(const std::vector<ImageChunk> & chunks);
    // Interleaved RGB8 (height, width, 3): preprocessing with up to max_slices slices, then every chunk.
    EncodedImage encode_image(const uint8_t * rgb, ImageSize size, int max_slices);

private:
    struct Layer {
        ggml_tensor *ln1_w, *ln1_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
        ggml_tensor *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    };
    struct Resampler {
        ggml_tensor *query, *kv_w, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b, *proj_w;
        ggml_tensor *ln_q_w, *ln_q_b, *ln_kv_w, *ln_kv_b, *ln_post_w, *ln_post_b;
    };

    void read_hparams(int requested_layers);
    void load_tensors();
    Layer load_layer(int index, bool ffn_names_swapped) const;
    ggml_tensor * build_vit(ggml_context * ctx, ggml_tensor * patches, ggml_tensor * position_ids) const;
    ggml_tensor * build_layer(ggml_context * ctx, ggml_tensor * x, const Layer & layer) const;
    void check_chunk(const ImageChunk & chunk, ImageSize size) const;
    ggml_tensor * build_resampler(ggml_context * ctx, ggml_tensor * states, ggml_tensor * key_positions) const;

    std::unique_ptr<Backend> backend_;
    std::unique_ptr<WeightFile> weights_;
    std::unique_ptr<GraphRunner> runner_;
    bool on_cpu_ = true;
    int image_size_ = 448;
    int patch_ = 14;
    int n_embd_ = 0;
    int n_head_ = 0;
    int n_ff_ = 0;
    int n_layer_file_ = 0;
    int n_query_ = 64;
    int n_out_ = 0;
    int position_side_ = 0;  // the ViT position table is a side x side grid of buckets (70 x 70 in the release)
    float eps_ = 1e-6f;
    PixelNormalisation normalisation_;
    ggml_tensor *patch_w_, *patch_b_, *position_embd_, *post_ln_w_, *post_ln_b_;
    std::vector<Layer> layers_;
    Resampler resampler_{};
};

}  // namespace omni

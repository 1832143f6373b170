#include "vision/vision_encoder.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/errors.h"
#include "core/gguf_file.h"
#include "core/graph_ops.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

namespace omni {
namespace {

constexpr int kPyTorchConfiguredLayers = 27;  // HF vision_config.num_hidden_layers; drop_vision_last_layer=True
constexpr int kResamplerHeadDim = 128;        // hard-coded by every loader (model-files.md §4.1)
constexpr int kDefaultQueries = 64;
constexpr double kSinCosBase = 10000.0;
const char * const kUnusedPositionTable = "resampler.pos_embed_k";  // computed at run time instead (§4.3)

std::string layer_prefix(int index) {
    return "v.blk." + std::to_string(index) + ".";
}

int positive_u32(const GgufFile & meta, const char * key) {
    const uint32_t value = meta.get_u32(key);
    if (value == 0 || value > (1u << 20)) {
        throw ModelFileError(meta.path() + ": " + key + " is " + std::to_string(value));
    }
    return static_cast<int>(value);
}

// The stage's matmuls accumulate in F32 on every backend: with cuBLAS's F16 accumulation the CUDA rows were up to
// 2e-3 off PyTorch (measured on an H100), against the 1e-3 the stage is held to.
ggml_tensor * project(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return linear_f32_accumulate(ctx, x, w, b);
}

// Patches as columns: (3 * patch * patch, n_patches) in the order of the conv kernel (x fastest, then y, then
// the channel), patches row-major over the image.
std::vector<float> unfold_patches(const ImageChunk & chunk, int patch) {
    const int cols = chunk.size.width / patch;
    const int rows = chunk.size.height / patch;
    const size_t plane = static_cast<size_t>(chunk.size.width) * chunk.size.height;
    std::vector<float> out(static_cast<size_t>(3) * patch * patch * rows * cols);
    float * dst = out.data();
    for (int pr = 0; pr < rows; ++pr) {
        for (int pc = 0; pc < cols; ++pc) {
            for (int c = 0; c < 3; ++c) {
                for (int y = 0; y < patch; ++y) {
                    const float * src = chunk.pixels.data() + c * plane +
                                        static_cast<size_t>(pr * patch + y) * chunk.size.width + pc * patch;
                    dst = std::copy(src, src + patch, dst);
                }
            }
        }
    }
    return out;
}

// ViT position ids of a rows x cols patch grid: floor(side * i / rows) * side + floor(side * j / cols)
// (model-files.md §4.4), in exact integers as libmtmd. PyTorch buckets float32 aranges instead, which picks the
// neighbouring bucket at a few indices for some sides (25, 49, 50, 55 ... patches) and depends on torch's vectorised
// arange, so the exact formula is kept.
std::vector<int32_t> bucket_position_ids(int rows, int cols, int side) {
    std::vector<int32_t> ids;
    ids.reserve(static_cast<size_t>(rows) * cols);
    for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
            ids.push_back(static_cast<int32_t>((side * i / rows) * side + side * j / cols));
        }
    }
    return ids;
}

// Resampler key positions, (width, rows * cols): per patch (i, j) [sin(j w), cos(j w), sin(i w), cos(i w)] with
// width / 4 frequencies w_k = 10000^(-k / (width / 4)) — the patch column first, as MiniCPM-V's resampler.
// Computed in double, then rounded to float, as the PyTorch reference; each coordinate's half-row is computed
// once and copied to every patch that has it.
std::vector<float> key_positions(int rows, int cols, int width) {
    const int quarter = width / 4;
    const int half = 2 * quarter;
    const int n_coordinates = std::max(rows, cols);
    std::vector<float> by_coordinate(static_cast<size_t>(n_coordinates) * half);
    for (int c = 0; c < n_coordinates; ++c) {
        float * dst = by_coordinate.data() + static_cast<size_t>(c) * half;
        for (int k = 0; k < quarter; ++k) {
            const double angle = c * std::pow(kSinCosBase, -static_cast<double>(k) / quarter);
            dst[k] = static_cast<float>(std::sin(angle));
            dst[quarter + k] = static_cast<float>(std::cos(angle));
        }
    }
    std::vector<float> out(static_cast<size_t>(width) * rows * cols);
    float * dst = out.data();
    for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
            for (const int coordinate : {j, i}) {
                const float * src = by_coordinate.data() + static_cast<size_t>(coordinate) * half;
                dst = std::copy(src, src + half, dst);
            }
        }
    }
    return out;
}

void read_rgb_triple(const GgufFile & meta, const char * key, float * out) {
    const std::vector<float> values = meta.get_f32_array(key);
    if (values.size() < 3) throw ModelFileError(meta.path() + ": " + key + " needs 3 values");
    std::copy(values.begin(), values.begin() + 3, out);
}

}  // namespace

int vision_layers_to_run(int requested, int in_file) {
    if (requested < 0 || requested > in_file) {
        throw std::invalid_argument("the vision layer count (n_layers / vision_layers) must be 0 (auto) or 1.." +
                                    std::to_string(in_file) + ", got " + std::to_string(requested));
    }
    if (requested > 0) return requested;
    // The PyTorch model truncates its 27-layer ViT to 26 at construction; the converter writes all 27.
    return in_file == kPyTorchConfiguredLayers ? in_file - 1 : in_file;
}

VisionEncoder::VisionEncoder(const VisionEncoderOptions & options) {
    {
        const GgufFile meta(options.path);
        const std::string arch = meta.get_string("general.architecture");
        if (arch != "clip") {
            throw ModelFileError(options.path + ": general.architecture is '" + arch + "', expected 'clip' (vision)");
        }
        n_layer_file_ = positive_u32(meta, "clip.vision.block_count");
    }
    const int n_run = vision_layers_to_run(options.n_layers, n_layer_file_);
    WeightFileOptions load_options;
    load_options.skip.push_back(kUnusedPositionTable);
    for (int i = n_run; i < n_layer_file_; ++i) {
        for (const char * name : {"attn_q", "attn_k", "attn_v", "attn_out", "ln1", "ln2", "ffn_down", "ffn_up"}) {
            for (const char * part : {".weight", ".bias"}) load_options.skip.push_back(layer_prefix(i) + name + part);
        }
    }
    backend_ = std::make_unique<Backend>(BackendOptions{options.use_gpu, options.n_threads});
    on_cpu_ = ggml_backend_is_cpu(backend_->get());
    weights_ = std::make_unique<WeightFile>(options.path, backend_->get(), load_options);
    read_hparams(n_run);
    load_tensors();
    runner_ = std::make_unique<GraphRunner>(backend_->get(), 512 + static_cast<size_t>(n_run) * 64);
}

VisionEncoder::~VisionEncoder() = default;

void VisionEncoder::read_hparams(int n_run) {
    const GgufFile & meta = weights_->meta();
    const std::string & path = meta.path();
    if (meta.has_key("clip.has_vision_encoder") && !meta.get_bool("clip.has_vision_encoder")) {
        throw ModelFileError(path + ": clip.has_vision_encoder is false");
    }
    const std::string projector = meta.get_string("clip.projector_type");
    if (projector != "resampler") {
        throw ModelFileError(path + ": clip.projector_type is '" + projector + "', expected 'resampler'");
    }
    image_size_ = positive_u32(meta, "clip.vision.image_size");
    patch_ = positive_u32(meta, "clip.vision.patch_size");
    n_embd_ = positive_u32(meta, "clip.vision.embedding_length");
    n_ff_ = positive_u32(meta, "clip.vision.feed_forward_length");
    n_head_ = positive_u32(meta, "clip.vision.attention.head_count");
    eps_ = meta.get_f32("clip.vision.attention.layer_norm_epsilon");
    const uint32_t queries = meta.get_u32_or("clip.minicpmv_query_num", 0);
    n_query_ = queries == 0 ? kDefaultQueries : static_cast<int>(queries);
    if (n_embd_ % n_head_ != 0) {
        throw ModelFileError(path + ": embedding_length " + std::to_string(n_embd_) +
                             " is not divisible by head_count " + std::to_string(n_head_));
    }
    if (n_ff_ == n_embd_) {
        throw ModelFileError(path +
                             ": feed_forward_length equals embedding_length, so the ffn_up/ffn_down naming "
                             "cannot be told apart (model-files.md §4.3)");
    }
    read_rgb_triple(meta, "clip.vision.image_mean", normalisation_.mean);
    read_rgb_triple(meta, "clip.vision.image_std", normalisation_.std);
    n_out_ = static_cast<int>(meta.tensor("resampler.query").ne.at(0));
    if (n_out_ % kResamplerHeadDim != 0) {
        throw ModelFileError(path + ": resampler width " + std::to_string(n_out_) + " is not a multiple of " +
                             std::to_string(kResamplerHeadDim) + " (the resampler head size)");
    }
    const auto n_positions = static_cast<int>(meta.tensor("v.position_embd.weight").ne.at(1));
    position_side_ = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n_positions))));
    if (position_side_ * position_side_ != n_positions) {
        throw ModelFileError(path + ": v.position_embd.weight has " + std::to_string(n_positions) +
                             " rows, not a square grid");
    }
    layers_.resize(static_cast<size_t>(n_run));
}

void VisionEncoder::load_tensors() {
    const WeightFile & w = *weights_;
    const int d = n_embd_;
    patch_w_ = w.get("v.patch_embd.weight", {patch_, patch_, 3, d});
    patch_b_ = w.get("v.patch_embd.bias", {d});
    position_embd_ = w.get("v.position_embd.weight", {d, position_side_ * position_side_});
    post_ln_w_ = w.get("v.post_ln.weight", {d});
    post_ln_b_ = w.get("v.post_ln.bias", {d});
    // The release converter stores fc1 (width -> FFN) as ffn_down; detected as libmtmd does (§4.3).
    const bool swapped = w.meta().tensor("v.blk.0.ffn_down.weight").ne.at(0) == d;
    for (size_t i = 0; i < layers_.size(); ++i) layers_[i] = load_layer(static_cast<int>(i), swapped);

    const int width = n_out_;
    Resampler & r = resampler_;
    r.query = w.get("resampler.query", {width, n_query_});
    r.kv_w = w.get("resampler.kv.weight", {d, width});
    r.q_w = w.get("resampler.attn.q.weight", {width, width});
    r.q_b = w.get("resampler.attn.q.bias", {width});
    r.k_w = w.get("resampler.attn.k.weight", {width, width});
    r.k_b = w.get("resampler.attn.k.bias", {width});
    r.v_w = w.get("resampler.attn.v.weight", {width, width});
    r.v_b = w.get("resampler.attn.v.bias", {width});
    r.o_w = w.get("resampler.attn.out.weight", {width, width});
    r.o_b = w.get("resampler.attn.out.bias", {width});
    r.proj_w = w.get("resampler.proj.weight", {width, width});
    r.ln_q_w = w.get("resampler.ln_q.weight", {width});
    r.ln_q_b = w.get("resampler.ln_q.bias", {width});
    r.ln_kv_w = w.get("resampler.ln_kv.weight", {width});
    r.ln_kv_b = w.get("resampler.ln_kv.bias", {width});
    r.ln_post_w = w.get("resampler.ln_post.weight", {width});
    r.ln_post_b = w.get("resampler.ln_post.bias", {width});
}

VisionEncoder::Layer VisionEncoder::load_layer(int index, bool ffn_names_swapped) const {
    const WeightFile & w = *weights_;
    const std::string p = layer_prefix(index);
    const int d = n_embd_;
    const int f = n_ff_;
    const std::string fc1 = p + (ffn_names_swapped ? "ffn_down" : "ffn_up");
    const std::string fc2 = p + (ffn_names_swapped ? "ffn_up" : "ffn_down");
    return Layer{
        w.get(p + "ln1.weight", {d}),       w.get(p + "ln1.bias", {d}),         w.get(p + "attn_q.weight", {d, d}),
        w.get(p + "attn_q.bias", {d}),      w.get(p + "attn_k.weight", {d, d}), w.get(p + "attn_k.bias", {d}),
        w.get(p + "attn_v.weight", {d, d}), w.get(p + "attn_v.bias", {d}),      w.get(p + "attn_out.weight", {d, d}),
        w.get(p + "attn_out.bias", {d}),    w.get(p + "ln2.weight", {d}),       w.get(p + "ln2.bias", {d}),
        w.get(fc1 + ".weight", {d, f}),     w.get(fc1 + ".bias", {f}),          w.get(fc2 + ".weight", {f, d}),
        w.get(fc2 + ".bias", {d}),
    };
}

// x: (n_embd, n_patches, n_chunks).
ggml_tensor * VisionEncoder::build_layer(ggml_context * ctx, ggml_tensor * x, const Layer & layer) const {
    const int64_t n = x->ne[1];
    const int64_t n_chunks = x->ne[2];
    const int head_dim = n_embd_ / n_head_;
    const auto heads = [&](ggml_tensor * t) { return ggml_reshape_4d(ctx, t, head_dim, n_head_, n, n_chunks); };
    ggml_tensor * h = layer_norm(ctx, x, layer.ln1_w, layer.ln1_b, eps_);
    ggml_tensor * q = heads(project(ctx, h, layer.q_w, layer.q_b));
    ggml_tensor * k = heads(project(ctx, h, layer.k_w, layer.k_b));
    ggml_tensor * v = heads(project(ctx, h, layer.v_w, layer.v_b));
    x = ggml_add(ctx, x, project(ctx, attention(ctx, q, k, v, true), layer.o_w, layer.o_b));
    h = layer_norm(ctx, x, layer.ln2_w, layer.ln2_b, eps_);
    h = project(ctx, gelu_tanh(ctx, project(ctx, h, layer.fc1_w, layer.fc1_b), on_cpu_), layer.fc2_w, layer.fc2_b);
    return ggml_add(ctx, x, h);
}

ggml_tensor * VisionEncoder::build_vit(ggml_context * ctx, ggml_tensor * patches, ggml_tensor * position_ids) const {
    ggml_tensor * kernel = ggml_reshape_2d(ctx, patch_w_, patch_w_->ne[0] * patch_w_->ne[1] * 3, n_embd_);
    ggml_tensor * x = project(ctx, patches, kernel, patch_b_);  // the stride-patch conv as one matmul
    x = ggml_add(ctx, x, ggml_get_rows(ctx, position_embd_, position_ids));
    for (const Layer & layer : layers_) x = build_layer(ctx, x, layer);
    return layer_norm(ctx, x, post_ln_w_, post_ln_b_, eps_);
}

ggml_tensor * VisionEncoder::build_resampler(ggml_context * ctx, ggml_tensor * states,
                                             ggml_tensor * key_positions) const {
    const Resampler & r = resampler_;
    const int64_t n = states->ne[1];
    const int64_t n_chunks = states->ne[2];
    const int n_head = n_out_ / kResamplerHeadDim;
    ggml_tensor * values = layer_norm(ctx, project(ctx, states, r.kv_w, nullptr), r.ln_kv_w, r.ln_kv_b, eps_);
    ggml_tensor * keys = ggml_add(ctx, values, key_positions);  // the same positions for every chunk
    ggml_tensor * queries = layer_norm(ctx, r.query, r.ln_q_w, r.ln_q_b, eps_);
    ggml_tensor * q = project(ctx, queries, r.q_w, r.q_b);
    q = ggml_repeat_4d(ctx, ggml_reshape_3d(ctx, q, kResamplerHeadDim, n_head, n_query_), kResamplerHeadDim, n_head,
                       n_query_, n_chunks);
    ggml_tensor * k = ggml_reshape_4d(ctx, project(ctx, keys, r.k_w, r.k_b), kResamplerHeadDim, n_head, n, n_chunks);
    ggml_tensor * v = ggml_reshape_4d(ctx, project(ctx, values, r.v_w, r.v_b), kResamplerHeadDim, n_head, n, n_chunks);
    ggml_tensor * x = project(ctx, attention(ctx, q, k, v, true), r.o_w, r.o_b);
    x = layer_norm(ctx, x, r.ln_post_w, r.ln_post_b, eps_);
    return project(ctx, x, r.proj_w, nullptr);
}

void VisionEncoder::check_chunk(const ImageChunk & chunk, ImageSize size) const {
    const ImageSize own = chunk.size;
    if (own.width < patch_ || own.height < patch_ || own.width % patch_ || own.height % patch_) {
        throw std::invalid_argument("pixels: image chunk " + std::to_string(own.width) + "x" +
                                    std::to_string(own.height) + " is not a positive multiple of the " +
                                    std::to_string(patch_) + "-pixel patch");
    }
    if (own.width != size.width || own.height != size.height) {
        throw std::invalid_argument("pixels: chunks encoded together must have one size");
    }
    if (chunk.pixels.size() != static_cast<size_t>(3) * own.width * own.height) {
        throw std::invalid_argument("pixels: an image chunk must hold 3 x height x width values");
    }
}

std::vector<float> VisionEncoder::encode_chunk(const ImageChunk & chunk) {
    return encode_same_size_chunks({chunk}).at(0);
}

std::vector<std::vector<float>> VisionEncoder::encode_same_size_chunks(const std::vector<ImageChunk> & chunks) {
    if (chunks.empty()) return {};
    const ImageSize size = chunks.front().size;
    std::vector<float> patches;
    for (const ImageChunk & chunk : chunks) {
        check_chunk(chunk, size);
        const std::vector<float> unfolded = unfold_patches(chunk, patch_);
        patches.insert(patches.end(), unfolded.begin(), unfolded.end());
    }
    const int rows = size.height / patch_;
    const int cols = size.width / patch_;
    const int n = rows * cols;
    const auto n_chunks = static_cast<int64_t>(chunks.size());
    const std::vector<int32_t> ids = bucket_position_ids(rows, cols, position_side_);
    const std::vector<float> positions = key_positions(rows, cols, n_out_);
    ggml_tensor *patches_in = nullptr, *ids_in = nullptr, *positions_in = nullptr, *output = nullptr;
    runner_->run(
        [&](ggml_context * ctx) {
            patches_in = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, static_cast<int64_t>(3) * patch_ * patch_, n, n_chunks);
            ids_in = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
            positions_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_out_, n);
            for (ggml_tensor * input : {patches_in, ids_in, positions_in}) ggml_set_input(input);
            output = build_resampler(ctx, build_vit(ctx, patches_in, ids_in), positions_in);
            ggml_set_output(output);
            ggml_cgraph * graph = ggml_new_graph_custom(ctx, 512 + layers_.size() * 64, false);
            ggml_build_forward_expand(graph, output);
            return graph;
        },
        [&] {
            ggml_backend_tensor_set(patches_in, patches.data(), 0, patches.size() * sizeof(float));
            ggml_backend_tensor_set(ids_in, ids.data(), 0, ids.size() * sizeof(int32_t));
            ggml_backend_tensor_set(positions_in, positions.data(), 0, positions.size() * sizeof(float));
        });
    const size_t per_chunk = static_cast<size_t>(n_query_) * n_out_;
    std::vector<std::vector<float>> rows_out(chunks.size(), std::vector<float>(per_chunk));
    for (size_t i = 0; i < chunks.size(); ++i) {
        ggml_backend_tensor_get(output, rows_out[i].data(), i * per_chunk * sizeof(float), per_chunk * sizeof(float));
    }
    return rows_out;
}

// The overview alone, then all slices (one size) in one batched graph.
EncodedImage VisionEncoder::encode_image(const uint8_t * rgb, ImageSize size, int max_slices) {
    EncodedImage encoded;
    encoded.plan = plan_image_slices(size.width, size.height, max_slices, image_size_, patch_);
    std::vector<ImageChunk> chunks = preprocess_image(rgb, size, max_slices, image_size_, patch_, normalisation_);
    encoded.chunks.push_back(encode_chunk(chunks.front()));
    const std::vector<ImageChunk> slices(std::make_move_iterator(chunks.begin() + 1),
                                         std::make_move_iterator(chunks.end()));
    for (std::vector<float> & rows : encode_same_size_chunks(slices)) encoded.chunks.push_back(std::move(rows));
    return encoded;
}

}  // namespace omni

#include "token2wav/prompt_cache.h"

#include <memory>

#include "core/errors.h"
#include "core/gguf_file.h"
#include "ggml.h"
#include "gguf.h"

namespace omni {
namespace {

constexpr int kVersion = 2;
constexpr int kConvCacheFrames = 2;  // the DiT's causal convs keep 2 input frames
constexpr int kCfgRows = 2;
const char * const kKeyPrefix = "mtmd.prompt_cache.";
const char * const kTensorPrefix = "prompt_cache.";

struct LoadedGguf {
    gguf_context * gguf = nullptr;
    ggml_context * data = nullptr;
    ~LoadedGguf() {
        if (gguf) gguf_free(gguf);
        if (data) ggml_free(data);
    }
};

std::string shape_text(const std::vector<int64_t> & ne) {
    std::string text = "(";
    for (size_t i = 0; i < ne.size(); ++i) text += (i ? ", " : "") + std::to_string(ne[i]);
    return text + ")";
}

// The tensor's F32 values; its ne must equal `want` (trailing 1s ignored).
std::vector<float> read_tensor(const std::string & path, ggml_context * data, const std::string & short_name,
                               std::vector<int64_t> want) {
    const std::string name = kTensorPrefix + short_name;
    ggml_tensor * t = ggml_get_tensor(data, name.c_str());
    if (!t) throw ModelFileError(path + ": missing tensor '" + name + "'");
    if (t->type != GGML_TYPE_F32) throw ModelFileError(path + ": tensor '" + name + "' is not F32");
    std::vector<int64_t> have(t->ne, t->ne + GGML_MAX_DIMS);
    while (want.size() < have.size()) want.push_back(1);
    if (have != want) {
        throw ModelFileError(path + ": tensor '" + name + "' has shape " + shape_text(have) + ", expected " +
                             shape_text(want));
    }
    const float * values = static_cast<const float *>(t->data);
    return std::vector<float>(values, values + ggml_nelements(t));
}

int64_t time_extent(const std::string & path, ggml_context * data, const std::string & short_name) {
    ggml_tensor * t = ggml_get_tensor(data, (kTensorPrefix + short_name).c_str());
    if (!t) throw ModelFileError(path + ": missing tensor '" + kTensorPrefix + short_name + "'");
    return t->ne[1];
}

}  // namespace

PromptCache load_prompt_cache(const std::string & path, const FlowWeights & flow) {
    const GgufFile meta(path);  // typed errors for a missing or broken file
    const std::string k = kKeyPrefix;
    if (meta.get_i32(k + "version") != kVersion) {
        throw ModelFileError(path + ": " + k + "version is " + std::to_string(meta.get_i32(k + "version")) +
                             ", expected " + std::to_string(kVersion));
    }
    PromptCache cache;
    cache.n_timesteps = meta.get_i32(k + "n_timesteps");
    cache.temperature = meta.get_f32(k + "temperature");
    const EncoderWeights & enc = flow.encoder();
    const DitWeights & dit = flow.dit();
    if (cache.n_timesteps <= 0) throw ModelFileError(path + ": " + k + "n_timesteps must be positive");
    if (meta.get_i32(k + "pre_lookahead") != enc.lookahead) {
        throw ModelFileError(path + ": " + k + "pre_lookahead does not match the encoder's pre-lookahead conv");
    }

    LoadedGguf loaded;
    gguf_init_params params{};
    params.no_alloc = false;
    params.ctx = &loaded.data;
    loaded.gguf = gguf_init_from_file(path.c_str(), params);
    if (!loaded.gguf) throw ModelFileError("not a valid GGUF file: " + path);

    cache.conformer_frames = static_cast<int>(time_extent(path, loaded.data, "conformer_att_cache"));
    cache.estimator_frames = static_cast<int>(time_extent(path, loaded.data, "estimator_att_cache"));
    if (cache.conformer_frames % 2 != 0) {
        throw ModelFileError(path + ": the conformer cache length " + std::to_string(cache.conformer_frames) +
                             " is odd (token layers hold their cache twice)");
    }
    const int64_t n_layers = static_cast<int64_t>(enc.token_layers.size() + enc.mel_layers.size());
    const int64_t slots = static_cast<int64_t>(dit.blocks.size()) * cache.n_timesteps;
    const int64_t cnn_frames = 2 + 2 * enc.up_stride;
    cache.spk = read_tensor(path, loaded.data, "spk_cb", {flow.spk_dim()});
    cache.conformer_cnn = read_tensor(path, loaded.data, "conformer_cnn_cache", {enc.width, cnn_frames, 1});
    cache.conformer_att = read_tensor(path, loaded.data, "conformer_att_cache",
                                      {2 * enc.head_dim, cache.conformer_frames, enc.n_heads, n_layers});
    cache.estimator_cnn =
        read_tensor(path, loaded.data, "estimator_cnn_cache", {2 * dit.hidden, kConvCacheFrames, slots, kCfgRows});
    cache.estimator_att = read_tensor(path, loaded.data, "estimator_att_cache",
                                      {2 * dit.head_dim, cache.estimator_frames, dit.n_heads * slots, kCfgRows});
    return cache;
}

}  // namespace omni

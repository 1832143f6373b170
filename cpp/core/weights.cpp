#include "core/weights.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/errors.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"

namespace omni {
namespace {

std::string shape_text(const int64_t * ne, int n) {
    std::string text = "(";
    for (int i = 0; i < n; ++i) text += (i ? ", " : "") + std::to_string(ne[i]);
    return text + ")";
}

bool listed(const std::vector<std::string> & names, const char * name) {
    return std::find(names.begin(), names.end(), name) != names.end();
}

bool same_shape(const int64_t * have, int n_have, std::initializer_list<int64_t> want) {
    if (static_cast<int>(want.size()) > GGML_MAX_DIMS) return false;
    int i = 0;
    for (int64_t expected : want) {
        if ((i < n_have ? have[i] : 1) != expected) return false;
        ++i;
    }
    for (; i < n_have; ++i) {
        if (have[i] != 1) return false;
    }
    return true;
}

std::vector<float> to_f32(const ggml_tensor * meta, const std::vector<char> & bytes, const std::string & what) {
    const int64_t n = ggml_nelements(meta);
    std::vector<float> values(static_cast<size_t>(n));
    if (meta->type == GGML_TYPE_F32) {
        std::copy_n(reinterpret_cast<const float *>(bytes.data()), n, values.data());
    } else if (meta->type == GGML_TYPE_F16) {
        ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t *>(bytes.data()), values.data(), n);
    } else {
        throw ModelFileError(what + " has type " + ggml_type_name(meta->type) + ", expected F32 or F16");
    }
    return values;
}

// Closes the file and frees the GGUF directory on every exit path.
struct OpenGguf {
    gguf_context * gguf = nullptr;
    ggml_context * meta = nullptr;
    FILE * file = nullptr;
    ~OpenGguf() {
        if (file) std::fclose(file);
        if (gguf) gguf_free(gguf);
        if (meta) ggml_free(meta);
    }
};

}  // namespace

WeightFile::WeightFile(const std::string & path, ggml_backend * backend, const WeightFileOptions & options) {
    meta_ = std::make_unique<GgufFile>(path);  // typed errors for a missing or broken file
    OpenGguf open;
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = &open.meta;
    open.gguf = gguf_init_from_file(path.c_str(), params);
    if (!open.gguf) throw ModelFileError("not a valid GGUF file: " + path);
    const int64_t n_tensors = gguf_get_n_tensors(open.gguf);

    ggml_init_params ctx_params{};
    ctx_params.mem_size = ggml_tensor_overhead() * static_cast<size_t>(n_tensors + 1);
    ctx_params.no_alloc = true;
    ctx_ = ggml_init(ctx_params);
    if (!ctx_) throw EngineError("could not create a tensor context for " + path);
    for (int64_t i = 0; i < n_tensors; ++i) {
        const char * name = gguf_get_tensor_name(open.gguf, i);
        if (listed(options.skip, name) || listed(options.host, name)) continue;
        ggml_tensor * tensor = ggml_dup_tensor(ctx_, ggml_get_tensor(open.meta, name));
        ggml_set_name(tensor, name);
    }
    if (ggml_get_first_tensor(ctx_)) {
        buffer_ = ggml_backend_alloc_ctx_tensors(ctx_, backend);
        if (!buffer_) throw EngineError("out of memory loading the tensors of " + path);
    }

    open.file = std::fopen(path.c_str(), "rb");
    if (!open.file) throw ModelFileError("cannot open " + path);
    std::vector<char> data;
    const size_t base = gguf_get_data_offset(open.gguf);
    for (int64_t i = 0; i < n_tensors; ++i) {
        const char * name = gguf_get_tensor_name(open.gguf, i);
        const bool to_host = listed(options.host, name);
        ggml_tensor * tensor = to_host ? ggml_get_tensor(open.meta, name) : ggml_get_tensor(ctx_, name);
        if (!tensor) continue;  // skipped
        const size_t size = ggml_nbytes(tensor);
        data.resize(size);
        const bool ok =
            std::fseek(open.file, static_cast<long>(base + gguf_get_tensor_offset(open.gguf, i)), SEEK_SET) == 0 &&
            std::fread(data.data(), 1, size, open.file) == size;
        if (!ok) throw ModelFileError(path + ": tensor '" + name + "' is truncated");
        if (to_host) {
            HostTensor & host = host_[name];
            host.ne.assign(tensor->ne, tensor->ne + ggml_n_dims(tensor));
            host.data = to_f32(tensor, data, path + ": tensor '" + name + "'");
        } else {
            ggml_backend_tensor_set(tensor, data.data(), 0, size);
        }
    }
}

WeightFile::~WeightFile() {
    if (buffer_) ggml_backend_buffer_free(buffer_);
    if (ctx_) ggml_free(ctx_);
}

void WeightFile::require_shape(const std::string & name, const int64_t * have, int n_have,
                               std::initializer_list<int64_t> want) const {
    if (same_shape(have, n_have, want)) return;
    const std::vector<int64_t> wanted(want);
    throw ModelFileError(path() + ": tensor '" + name + "' has shape " + shape_text(have, n_have) + ", expected " +
                         shape_text(wanted.data(), static_cast<int>(wanted.size())));
}

ggml_tensor * WeightFile::get(const std::string & name, std::initializer_list<int64_t> ne) const {
    ggml_tensor * tensor = ggml_get_tensor(ctx_, name.c_str());
    if (!tensor) throw ModelFileError(path() + ": missing tensor '" + name + "'");
    require_shape(name, tensor->ne, ggml_n_dims(tensor), ne);
    return tensor;
}

const HostTensor & WeightFile::host(const std::string & name, std::initializer_list<int64_t> ne) const {
    const auto found = host_.find(name);
    if (found == host_.end()) throw ModelFileError(path() + ": missing tensor '" + name + "'");
    const HostTensor & tensor = found->second;
    require_shape(name, tensor.ne.data(), static_cast<int>(tensor.ne.size()), ne);
    return tensor;
}

}  // namespace omni

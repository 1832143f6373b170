#include "core/weights.h"

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

}  // namespace

WeightFile::WeightFile(const std::string & path, ggml_backend * backend) {
    meta_ = std::make_unique<GgufFile>(path);  // typed errors for a missing or broken file
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = &ctx_;
    gguf_context * gguf = gguf_init_from_file(path.c_str(), params);
    if (!gguf) throw ModelFileError("not a valid GGUF file: " + path);
    buffer_ = ggml_backend_alloc_ctx_tensors(ctx_, backend);
    if (!buffer_) {
        gguf_free(gguf);
        throw EngineError("out of memory loading the tensors of " + path);
    }
    FILE * file = std::fopen(path.c_str(), "rb");
    if (!file) {
        gguf_free(gguf);
        throw ModelFileError("cannot open " + path);
    }
    std::vector<char> data;
    const size_t base = gguf_get_data_offset(gguf);
    bool ok = true;
    std::string failed;
    for (int64_t i = 0; i < gguf_get_n_tensors(gguf) && ok; ++i) {
        const char * name = gguf_get_tensor_name(gguf, i);
        ggml_tensor * tensor = ggml_get_tensor(ctx_, name);
        const size_t size = ggml_nbytes(tensor);
        data.resize(size);
        ok = std::fseek(file, static_cast<long>(base + gguf_get_tensor_offset(gguf, i)), SEEK_SET) == 0 &&
             std::fread(data.data(), 1, size, file) == size;
        if (ok)
            ggml_backend_tensor_set(tensor, data.data(), 0, size);
        else
            failed = name;
    }
    std::fclose(file);
    gguf_free(gguf);
    if (!ok) throw ModelFileError(path + ": tensor '" + failed + "' is truncated");
}

WeightFile::~WeightFile() {
    if (buffer_) ggml_backend_buffer_free(buffer_);
    if (ctx_) ggml_free(ctx_);
}

ggml_tensor * WeightFile::get(const std::string & name, std::initializer_list<int64_t> ne) const {
    ggml_tensor * tensor = ggml_get_tensor(ctx_, name.c_str());
    if (!tensor) throw ModelFileError(path() + ": missing tensor '" + name + "'");
    int i = 0;
    bool same = static_cast<int>(ne.size()) <= GGML_MAX_DIMS;
    for (int64_t expected : ne) {
        same = same && tensor->ne[i++] == expected;
    }
    for (; i < GGML_MAX_DIMS; ++i) same = same && tensor->ne[i] == 1;
    if (!same) {
        std::vector<int64_t> want(ne);
        throw ModelFileError(path() + ": tensor '" + name + "' has shape " +
                             shape_text(tensor->ne, ggml_n_dims(tensor)) + ", expected " +
                             shape_text(want.data(), static_cast<int>(want.size())));
    }
    return tensor;
}

}  // namespace omni

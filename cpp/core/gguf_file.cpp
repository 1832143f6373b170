#include "core/gguf_file.h"

#include <sys/stat.h>

#include "core/errors.h"
#include "gguf.h"

namespace omni {

GgufFile::GgufFile(const std::string & path) : path_(path) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        throw ModelFileError("model file not found: " + path);
    }
    if (!S_ISREG(st.st_mode)) {
        throw ModelFileError("model file is not a regular file: " + path);
    }
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = nullptr;
    ctx_ = gguf_init_from_file(path.c_str(), params);
    if (!ctx_) {
        throw ModelFileError("not a valid GGUF file (bad magic, truncated or corrupt): " + path);
    }
}

GgufFile::~GgufFile() {
    if (ctx_) {
        gguf_free(ctx_);
    }
}

void GgufFile::fail(const std::string & what) const {
    throw ModelFileError(path_ + ": " + what);
}

bool GgufFile::has_key(const std::string & key) const {
    return gguf_find_key(ctx_, key.c_str()) >= 0;
}

int64_t GgufFile::key_id(const std::string & key, int expected_type) const {
    const int64_t id = gguf_find_key(ctx_, key.c_str());
    if (id < 0) {
        fail("missing metadata key '" + key + "'");
    }
    const auto type = gguf_get_kv_type(ctx_, id);
    if (static_cast<int>(type) != expected_type) {
        fail("metadata key '" + key + "' has type " + gguf_type_name(type) + ", expected " +
             gguf_type_name(static_cast<gguf_type>(expected_type)));
    }
    return id;
}

std::string GgufFile::get_string(const std::string & key) const {
    return gguf_get_val_str(ctx_, key_id(key, GGUF_TYPE_STRING));
}

uint32_t GgufFile::get_u32(const std::string & key) const {
    return gguf_get_val_u32(ctx_, key_id(key, GGUF_TYPE_UINT32));
}

int32_t GgufFile::get_i32(const std::string & key) const {
    return gguf_get_val_i32(ctx_, key_id(key, GGUF_TYPE_INT32));
}

float GgufFile::get_f32(const std::string & key) const {
    return gguf_get_val_f32(ctx_, key_id(key, GGUF_TYPE_FLOAT32));
}

bool GgufFile::get_bool(const std::string & key) const {
    return gguf_get_val_bool(ctx_, key_id(key, GGUF_TYPE_BOOL));
}

size_t GgufFile::get_array_size(const std::string & key) const {
    return gguf_get_arr_n(ctx_, key_id(key, GGUF_TYPE_ARRAY));
}

std::vector<float> GgufFile::get_f32_array(const std::string & key) const {
    const int64_t id = key_id(key, GGUF_TYPE_ARRAY);
    if (gguf_get_arr_type(ctx_, id) != GGUF_TYPE_FLOAT32) {
        fail("metadata key '" + key + "' is an array of " + gguf_type_name(gguf_get_arr_type(ctx_, id)) +
             ", expected float32");
    }
    const auto * data = static_cast<const float *>(gguf_get_arr_data(ctx_, id));
    return std::vector<float>(data, data + gguf_get_arr_n(ctx_, id));
}

uint32_t GgufFile::get_u32_or(const std::string & key, uint32_t fallback) const {
    return has_key(key) ? get_u32(key) : fallback;
}

bool GgufFile::has_tensor(const std::string & name) const {
    return gguf_find_tensor(ctx_, name.c_str()) >= 0;
}

int64_t GgufFile::n_tensors() const {
    return gguf_get_n_tensors(ctx_);
}

TensorInfo GgufFile::tensor(const std::string & name) const {
    const int64_t id = gguf_find_tensor(ctx_, name.c_str());
    if (id < 0) {
        fail("missing tensor '" + name + "'");
    }
    TensorInfo info;
    info.name = name;
    info.type = static_cast<int>(gguf_get_tensor_type(ctx_, id));
    const int64_t * ne = gguf_get_tensor_ne(ctx_, id);
    int n_dims = GGML_MAX_DIMS;
    while (n_dims > 1 && ne[n_dims - 1] == 1) {
        --n_dims;
    }
    info.ne.assign(ne, ne + n_dims);
    return info;
}

}  // namespace omni

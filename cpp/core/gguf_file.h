// Read-only view of a GGUF file's metadata and tensor directory, with errors that name the file, the key
// or the tensor. Tensor data is not loaded here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct gguf_context;

namespace omni {

struct TensorInfo {
    std::string name;
    int type = 0;             // ggml_type
    std::vector<int64_t> ne;  // GGUF ne order, trailing 1s dropped
};

class GgufFile {
public:
    // Throws ModelFileError naming `path` if it is missing or not a readable GGUF file.
    explicit GgufFile(const std::string & path);
    ~GgufFile();
    GgufFile(const GgufFile &) = delete;
    GgufFile & operator=(const GgufFile &) = delete;

    const std::string & path() const { return path_; }
    bool has_key(const std::string & key) const;
    std::string get_string(const std::string & key) const;
    uint32_t get_u32(const std::string & key) const;
    int32_t get_i32(const std::string & key) const;
    float get_f32(const std::string & key) const;
    bool get_bool(const std::string & key) const;
    size_t get_array_size(const std::string & key) const;
    std::vector<float> get_f32_array(const std::string & key) const;
    uint32_t get_u32_or(const std::string & key, uint32_t fallback) const;

    bool has_tensor(const std::string & name) const;
    TensorInfo tensor(const std::string & name) const;  // throws naming the missing tensor
    int64_t n_tensors() const;

private:
    int64_t key_id(const std::string & key, int expected_type) const;
    [[noreturn]] void fail(const std::string & what) const;

    std::string path_;
    gguf_context * ctx_ = nullptr;
};

}  // namespace omni

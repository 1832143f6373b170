// The tensors of one GGUF file, loaded into a backend buffer, looked up by name with shape checks.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/gguf_file.h"

struct ggml_context;
struct ggml_tensor;
struct ggml_backend;
struct ggml_backend_buffer;

namespace omni {

class WeightFile {
public:
    // Reads every tensor of `path` into a buffer of `backend`. Throws ModelFileError naming the file.
    WeightFile(const std::string & path, ggml_backend * backend);
    ~WeightFile();
    WeightFile(const WeightFile &) = delete;
    WeightFile & operator=(const WeightFile &) = delete;

    const GgufFile & meta() const { return *meta_; }
    const std::string & path() const { return meta_->path(); }
    // The tensor called `name`; throws ModelFileError naming file, tensor, expected and actual ne.
    ggml_tensor * get(const std::string & name, std::initializer_list<int64_t> ne) const;

private:
    std::unique_ptr<GgufFile> meta_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer * buffer_ = nullptr;
};

}  // namespace omni

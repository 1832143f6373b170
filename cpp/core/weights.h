// The tensors of one GGUF file, loaded into a backend buffer, looked up by name with shape checks.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/gguf_file.h"

struct ggml_context;
struct ggml_tensor;
struct ggml_backend;
struct ggml_backend_buffer;

namespace omni {

struct WeightFileOptions {
    std::vector<std::string> skip;  // tensors left unread (present in the file, unused by the stage)
    std::vector<std::string> host;  // tensors read into host memory as F32 instead of the backend buffer
};

// A tensor kept in host memory, converted to F32; `ne` in GGUF order.
struct HostTensor {
    std::vector<int64_t> ne;
    std::vector<float> data;
};

class WeightFile {
public:
    // Reads the tensors of `path` into a buffer of `backend` (and the `host` ones into memory).
    // Throws ModelFileError naming the file.
    WeightFile(const std::string & path, ggml_backend * backend, const WeightFileOptions & options = {});
    ~WeightFile();
    WeightFile(const WeightFile &) = delete;
    WeightFile & operator=(const WeightFile &) = delete;

    const GgufFile & meta() const { return *meta_; }
    const std::string & path() const { return meta_->path(); }
    // The tensor called `name`; throws ModelFileError naming file, tensor, expected and actual ne.
    ggml_tensor * get(const std::string & name, std::initializer_list<int64_t> ne) const;
    // A host tensor (named in options.host); same errors as get().
    const HostTensor & host(const std::string & name, std::initializer_list<int64_t> ne) const;

private:
    // Throws ModelFileError naming file, tensor, actual and expected ne unless they agree.
    void require_shape(const std::string & name, const int64_t * have, int n_have,
                       std::initializer_list<int64_t> want) const;

    std::map<std::string, HostTensor> host_;
    std::unique_ptr<GgufFile> meta_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer * buffer_ = nullptr;
};

}  // namespace omni

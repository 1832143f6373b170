// A ggml backend for one stage (the LLM's device when layers are offloaded, else the CPU) and a small
// graph runner: build a graph in a scratch context, allocate it, compute.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

struct ggml_context;
struct ggml_cgraph;
struct ggml_backend;
struct ggml_gallocr;

namespace omni {

struct BackendOptions {
    bool use_gpu = false;  // the first GPU device if there is one
    int n_threads = 0;     // CPU threads; 0: auto
};

class Backend {
public:
    explicit Backend(const BackendOptions & options);
    ~Backend();
    Backend(const Backend &) = delete;
    Backend & operator=(const Backend &) = delete;

    ggml_backend * get() const { return backend_; }
    const std::string & name() const { return name_; }

private:
    ggml_backend * backend_ = nullptr;
    std::string name_;
};

// Builds and runs graphs on one backend; the compute buffer is kept and grown between runs.
class GraphRunner {
public:
    explicit GraphRunner(ggml_backend * backend, size_t max_nodes = 4096);
    ~GraphRunner();
    GraphRunner(const GraphRunner &) = delete;
    GraphRunner & operator=(const GraphRunner &) = delete;

    // `build` creates the graph in the given scratch context (tensors without data); `set_inputs` runs after
    // allocation to upload the inputs; returns the graph so the caller can read its outputs.
    void run(const std::function<ggml_cgraph *(ggml_context *)> & build, const std::function<void()> & set_inputs);
    // Sizes the compute buffer for `build`'s graph now (it only ever grows), so later graphs up to that size run
    // without a new device allocation.
    void reserve(const std::function<ggml_cgraph *(ggml_context *)> & build);

private:
    ggml_cgraph * build_in_scratch(const std::function<ggml_cgraph *(ggml_context *)> & build);

    ggml_backend * backend_;
    size_t max_nodes_;
    ggml_gallocr * allocator_ = nullptr;
    ggml_context * scratch_ = nullptr;
};

}  // namespace omni

#include "core/compute.h"

#include "core/backend.h"
#include "core/errors.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

namespace omni {

Backend::Backend(const BackendOptions & options) {
    if (options.use_gpu) {
        for (size_t i = 0; i < ggml_backend_dev_count() && !backend_; ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            const enum ggml_backend_dev_type type = ggml_backend_dev_type(dev);
            if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
                backend_ = ggml_backend_dev_init(dev, nullptr);
            }
        }
    }
    if (!backend_) {
        backend_ = ggml_backend_cpu_init();
        if (!backend_) throw EngineError("could not initialise the CPU backend");
        ggml_backend_cpu_set_n_threads(backend_, options.n_threads > 0 ? options.n_threads : default_thread_count());
    }
    name_ = ggml_backend_name(backend_);
}

Backend::~Backend() {
    if (backend_) ggml_backend_free(backend_);
}

GraphRunner::GraphRunner(ggml_backend * backend, size_t max_nodes) : backend_(backend), max_nodes_(max_nodes) {
    allocator_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    if (!allocator_) throw EngineError("could not create a graph allocator");
}

GraphRunner::~GraphRunner() {
    if (scratch_) ggml_free(scratch_);
    if (allocator_) ggml_gallocr_free(allocator_);
}

ggml_cgraph * GraphRunner::build_in_scratch(const std::function<ggml_cgraph *(ggml_context *)> & build) {
    if (scratch_) ggml_free(scratch_);
    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * max_nodes_ + ggml_graph_overhead_custom(max_nodes_, false);
    params.no_alloc = true;
    scratch_ = ggml_init(params);
    if (!scratch_) throw EngineError("could not create a graph context");
    return build(scratch_);
}

void GraphRunner::reserve(const std::function<ggml_cgraph *(ggml_context *)> & build) {
    if (!ggml_gallocr_reserve(allocator_, build_in_scratch(build))) {
        throw EngineError("out of memory reserving a compute buffer");
    }
}

void GraphRunner::run(const std::function<ggml_cgraph *(ggml_context *)> & build,
                      const std::function<void()> & set_inputs) {
    ggml_cgraph * graph = build_in_scratch(build);
    if (!ggml_gallocr_alloc_graph(allocator_, graph)) throw EngineError("out of memory allocating a compute graph");
    set_inputs();
    if (ggml_backend_graph_compute(backend_, graph) != GGML_STATUS_SUCCESS) {
        throw EngineError("graph computation failed on " + std::string(ggml_backend_name(backend_)));
    }
}

}  // namespace omni

#include "core/backend.h"

#include <algorithm>
#include <thread>

#include "ggml-backend.h"
#include "llama.h"

namespace omni {
namespace {

std::string device_type_name(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        default: return "accel";
    }
}

}  // namespace

SystemInfo query_system_info() {
    SystemInfo info;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        info.backends.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo d;
        d.name = ggml_backend_dev_name(dev);
        d.description = ggml_backend_dev_description(dev);
        d.type = device_type_name(ggml_backend_dev_type(dev));
        ggml_backend_dev_memory(dev, &d.memory_free, &d.memory_total);
        info.has_gpu = info.has_gpu || d.type == "gpu" || d.type == "igpu";
        info.devices.push_back(std::move(d));
    }
    info.llama_system_info = llama_print_system_info();
    return info;
}

std::string primary_backend_name(int n_gpu_layers) {
    if (n_gpu_layers != 0) {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            const enum ggml_backend_dev_type type = ggml_backend_dev_type(dev);
            if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
                return ggml_backend_dev_name(dev);
            }
        }
    }
    return "CPU";
}

int default_thread_count() {
    const unsigned hw = std::thread::hardware_concurrency();
    // Leave one core for the server and the other stages on larger machines.
    return std::max(1, static_cast<int>(hw > 4 ? hw - 1 : (hw == 0 ? 4 : hw)));
}

}  // namespace omni

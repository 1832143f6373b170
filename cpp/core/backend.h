// Which ggml backends and devices this build and machine offer.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace omni {

struct DeviceInfo {
    std::string name;
    std::string description;
    std::string type;  // "cpu" | "gpu" | "igpu" | "accel"
    size_t memory_free = 0;
    size_t memory_total = 0;
};

struct SystemInfo {
    std::vector<std::string> backends;  // registered ggml backends, e.g. "CPU", "CUDA", "Metal"
    std::vector<DeviceInfo> devices;
    bool has_gpu = false;
    std::string llama_system_info;
};

SystemInfo query_system_info();

// "CUDA0", "Metal" or "CPU": where layers go with n_gpu_layers != 0.
std::string primary_backend_name(int n_gpu_layers);

// Threads to use when the caller asks for 0 ("auto").
int default_thread_count();

}  // namespace omni

// Python functions of the vision preprocessing (slice plan, Pillow-compatible resize, chunk pixels).
#pragma once

#include <pybind11/pybind11.h>

namespace omni_bindings {

void bind_image_preprocess(pybind11::module_ & m);

}  // namespace omni_bindings

// Python class of the vision stage: VisionEncoder (SigLIP ViT + resampler).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "vision/image_preprocess.h"

namespace omni_bindings {

using RgbArray = pybind11::array_t<uint8_t, pybind11::array::c_style>;

// A C-contiguous view/copy of a uint8 (height, width, 3) array; ValueError naming `rgb` for any other input.
RgbArray require_rgb(const pybind11::array & rgb);
inline omni::ImageSize rgb_size(const RgbArray & rgb) {
    return {static_cast<int>(rgb.shape(1)), static_cast<int>(rgb.shape(0))};
}

// `internals` gets libmtmd_encode_chunk: upstream libmtmd's own encoder on one chunk (a cross-check for tests).
void bind_vision(pybind11::module_ & m, pybind11::module_ & internals);

}  // namespace omni_bindings

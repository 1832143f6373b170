// omni_engine.plan_image_slices / resize_image_bicubic / preprocess_image: thin wrappers; the C++ checks the arguments.
#include "bindings/image_bindings.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <vector>

#include "bindings/vision_bindings.h"
#include "vision/image_preprocess.h"

namespace omni_bindings {
namespace {

namespace py = pybind11;
py::object size_or_none(const omni::ImageSize & size, bool present) {
    if (!present) return py::none();
    return py::make_tuple(size.width, size.height);
}

py::dict plan_dict(const omni::SlicePlan & plan) {
    const bool sliced = plan.n_slices() > 0;
    py::dict d;
    d["overview"] = py::make_tuple(plan.overview.width, plan.overview.height);
    d["grid"] = size_or_none({plan.grid_columns, plan.grid_rows}, sliced);
    d["refine"] = size_or_none(plan.refine, sliced);
    d["slice_size"] = size_or_none(plan.slice_size, sliced);
    return d;
}

py::dict plan_image_slices(int width, int height, int max_slices, int scale_resolution, int patch) {
    return plan_dict(omni::plan_image_slices(width, height, max_slices, scale_resolution, patch));
}

py::array_t<uint8_t> resize_image_bicubic(const py::array & rgb, int width, int height) {
    const RgbArray in = require_rgb(rgb);
    std::vector<uint8_t> out;
    {
        py::gil_scoped_release release;
        out = omni::resize_rgb_bicubic(in.data(), rgb_size(in), {width, height});
    }
    py::array_t<uint8_t> result(std::vector<py::ssize_t>{height, width, 3});
    std::copy(out.begin(), out.end(), result.mutable_data());
    return result;
}

py::array_t<float> chunk_array(const omni::ImageChunk & chunk) {
    py::array_t<float> out(std::vector<py::ssize_t>{3, chunk.size.height, chunk.size.width});
    std::copy(chunk.pixels.begin(), chunk.pixels.end(), out.mutable_data());
    return out;
}

py::list preprocess_image(const py::array & rgb, int max_slices, int scale_resolution, int patch) {
    const RgbArray in = require_rgb(rgb);
    std::vector<omni::ImageChunk> chunks;
    {
        py::gil_scoped_release release;
        chunks = omni::preprocess_image(in.data(), rgb_size(in), max_slices, scale_resolution, patch,
                                        omni::PixelNormalisation{});
    }
    py::list out;
    for (const omni::ImageChunk & chunk : chunks) out.append(chunk_array(chunk));
    return out;
}

}  // namespace

void bind_image_preprocess(py::module_ & m) {
    m.def("plan_image_slices", &plan_image_slices, py::arg("width"), py::arg("height"), py::arg("max_slices"),
          py::arg("scale_resolution") = 448, py::arg("patch") = 14,
          "The PyTorch reference's slice plan: {'overview': (w, h), 'grid': (columns, rows) | None, "
          "'refine': (w, h) | None, 'slice_size': (w, h) | None}.");
    m.def("resize_image_bicubic", &resize_image_bicubic, py::arg("rgb"), py::arg("width"), py::arg("height"),
          "Pillow-exact BICUBIC resize of a uint8 (h, w, 3) RGB array to (height, width, 3).");
    m.def("preprocess_image", &preprocess_image, py::arg("rgb"), py::arg("max_slices"),
          py::arg("scale_resolution") = 448, py::arg("patch") = 14,
          "Encoder inputs of an RGB image: the overview, then the slices row-major, each float32 (3, h, w) "
          "normalised with mean = std = 0.5.");
}

}  // namespace omni_bindings

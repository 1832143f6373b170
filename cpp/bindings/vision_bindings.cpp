#include "bindings/vision_bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <string>

#include "bindings/arrays.h"
#include "clip-impl.h"
#include "clip.h"
#include "core/errors.h"
#include "vision/vision_encoder.h"

namespace omni_bindings {
namespace {

namespace py = pybind11;

omni::ImageChunk chunk_from(const FloatArray & pixels) {
    if (pixels.ndim() != 3 || pixels.shape(0) != 3) {
        throw py::value_error("pixels must have shape (3, height, width)");
    }
    omni::ImageChunk chunk;
    chunk.size = {static_cast<int>(pixels.shape(2)), static_cast<int>(pixels.shape(1))};
    chunk.pixels.assign(pixels.data(), pixels.data() + pixels.size());
    return chunk;
}

py::list rows_list(const omni::EncodedImage & encoded, int n_query, int width) {
    py::list out;
    for (const std::vector<float> & rows : encoded.chunks) out.append(to_matrix(rows, n_query, width));
    return out;
}

// Upstream libmtmd's CLIP encoder (all block_count layers, its own kernels) on one preprocessed chunk. Used by
// the tests to show that libmtmd loads the file as written and computes what our graph computes; the engine
// does not use it (see vision_encoder.h for why).
py::array_t<float> libmtmd_encode_chunk(const std::string & path, const FloatArray & pixels, int n_threads) {
    const omni::ImageChunk chunk = chunk_from(pixels);
    std::vector<float> interleaved(chunk.pixels.size());
    const size_t plane = static_cast<size_t>(chunk.size.width) * chunk.size.height;
    for (size_t i = 0; i < plane; ++i) {
        for (size_t c = 0; c < 3; ++c) interleaved[i * 3 + c] = chunk.pixels[c * plane + i];
    }
    std::vector<float> out;
    int n_query = 0;
    int width = 0;
    {
        py::gil_scoped_release release;
        clip_context_params params{};
        params.use_gpu = false;
        params.flash_attn_type = CLIP_FLASH_ATTN_TYPE_DISABLED;
        params.image_min_tokens = -1;
        params.image_max_tokens = -1;
        clip_ctx * ctx = clip_init(path.c_str(), params).ctx_v;
        if (!ctx) throw omni::ModelFileError(path + ": libmtmd could not load the vision file");
        clip_image_f32 image;
        image.set_size({chunk.size.width, chunk.size.height}, false, false);
        image.cpy_buf(interleaved);
        n_query = clip_n_output_tokens(ctx, &image);
        width = clip_n_mmproj_embd(ctx);
        out.resize(static_cast<size_t>(n_query) * width);  // libmtmd writes only into a buffer of the right size
        const bool ok = clip_image_encode(ctx, n_threads, &image, out);
        clip_free(ctx);
        if (!ok) throw omni::EngineError(path + ": libmtmd failed to encode the image chunk");
    }
    return to_matrix(out, n_query, width);
}

}  // namespace

RgbArray require_rgb(const py::array & rgb) {
    const std::string expected = "rgb must be a uint8 array of shape (height, width, 3) with height, width >= 1";
    if (!rgb.dtype().is(py::dtype::of<uint8_t>())) {
        throw py::value_error(expected + ", got dtype " + std::string(py::str(rgb.dtype())));
    }
    const py::ssize_t max_side = std::numeric_limits<int>::max();
    if (rgb.ndim() != 3 || rgb.shape(2) != 3 || rgb.shape(0) < 1 || rgb.shape(1) < 1 || rgb.shape(0) > max_side ||
        rgb.shape(1) > max_side) {
        throw py::value_error(expected + ", got shape " + std::string(py::str(rgb.attr("shape"))));
    }
    return RgbArray::ensure(rgb);
}

void bind_vision(py::module_ & m, py::module_ & internals) {
    internals.def("libmtmd_encode_chunk", &libmtmd_encode_chunk, py::arg("path"), py::arg("pixels"),
                  py::arg("n_threads") = 4, "upstream libmtmd's encoder on one (3, h, w) chunk (tests only)");
    py::class_<omni::VisionEncoder>(m, "VisionEncoder",
                                    "SigLIP ViT + resampler of the official vision GGUF: images to 64-row chunks")
        .def(py::init([](const std::string & path, bool use_gpu, int n_threads, int n_layers) {
                 py::gil_scoped_release release;
                 return std::make_unique<omni::VisionEncoder>(
                     omni::VisionEncoderOptions{path, use_gpu, n_threads, n_layers});
             }),
             py::arg("path"), py::arg("use_gpu") = false, py::arg("n_threads") = 0, py::arg("n_layers") = 0)
        .def_property_readonly("n_layers", &omni::VisionEncoder::n_layers)
        .def_property_readonly("n_layers_in_file", &omni::VisionEncoder::n_layers_in_file)
        .def_property_readonly("image_size", &omni::VisionEncoder::image_size)
        .def_property_readonly("patch_size", &omni::VisionEncoder::patch_size)
        .def_property_readonly("n_query", &omni::VisionEncoder::n_query)
        .def_property_readonly("n_embd_out", &omni::VisionEncoder::n_embd_out)
        .def_property_readonly("backend", &omni::VisionEncoder::backend_name)
        .def(
            "encode_chunk",
            [](omni::VisionEncoder & encoder, const FloatArray & pixels) {
                const omni::ImageChunk chunk = chunk_from(pixels);
                std::vector<float> rows;
                {
                    py::gil_scoped_release release;
                    rows = encoder.encode_chunk(chunk);
                }
                return to_matrix(rows, encoder.n_query(), encoder.n_embd_out());
            },
            py::arg("pixels"), "one preprocessed (3, h, w) chunk -> (n_query, n_embd_out) rows")
        .def(
            "encode_image",
            [](omni::VisionEncoder & encoder, const py::array & array, int max_slices) {
                const RgbArray rgb = require_rgb(array);
                const omni::ImageSize size = rgb_size(rgb);
                omni::EncodedImage encoded;
                {
                    py::gil_scoped_release release;
                    encoded = encoder.encode_image(rgb.data(), size, max_slices);
                }
                return rows_list(encoded, encoder.n_query(), encoder.n_embd_out());
            },
            py::arg("rgb"), py::arg("max_slices") = 0,
            "RGB8 (h, w, 3) -> [overview rows, slice rows...], each (n_query, n_embd_out)");
}

}  // namespace omni_bindings

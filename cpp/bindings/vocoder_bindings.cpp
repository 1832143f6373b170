// omni_engine.HiftVocoder: the non-causal HiFT vocoder and its stream (t2w_api.md), on a backend of its own.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "bindings/arrays.h"
#include "bindings/token2wav_bindings.h"
#include "core/compute.h"
#include "token2wav/hift_vocoder.h"
#include "token2wav/vocoder_stream.h"

namespace omni_bindings {
namespace {

// The binding object: its backend, the vocoder on it and one stream over the vocoder (destroyed in reverse).
class VocoderHandle {
public:
    VocoderHandle(const std::string & path, bool use_gpu, int n_threads, bool add_noise, uint64_t noise_seed)
        : backend_(omni::BackendOptions{use_gpu, n_threads}),
          vocoder_(path, backend_.get(), omni::HiftOptions{add_noise, noise_seed}),
          stream_(vocoder_) {}

    omni::HiftVocoder & vocoder() { return vocoder_; }
    omni::VocoderStream & stream() { return stream_; }
    const std::string & backend_name() const { return backend_.name(); }

private:
    omni::Backend backend_;
    omni::HiftVocoder vocoder_;
    omni::VocoderStream stream_;
};

// A (80, frames) float32 mel as a channel-major vector; ValueError naming `mel` otherwise.
std::vector<float> mel_values(const py::array & mel, bool allow_empty, int * n_frames) {
    const std::string shape =
        "mel must be a float32 array of shape (80, frames) with frames >= " + std::string(allow_empty ? "0" : "1");
    if (!mel.dtype().is(py::dtype::of<float>())) {
        throw py::value_error(shape + ", got dtype " + std::string(py::str(mel.dtype())));
    }
    if (mel.ndim() != 2 || mel.shape(0) != omni::HiftVocoder::kMels || (!allow_empty && mel.shape(1) == 0)) {
        throw py::value_error(shape + ", got shape " + std::string(py::str(mel.attr("shape"))));
    }
    const FloatArray values = FloatArray::ensure(mel);
    *n_frames = static_cast<int>(values.shape(1));
    return std::vector<float>(values.data(), values.data() + values.size());
}

std::vector<float> prefix_values(const std::optional<py::array> & prefix) {
    if (!prefix) return {};
    if (!prefix->dtype().is(py::dtype::of<float>()) || prefix->ndim() != 1) {
        throw py::value_error("source_prefix must be a 1-D float32 array or None");
    }
    const FloatArray values = FloatArray::ensure(*prefix);
    return std::vector<float>(values.data(), values.data() + values.size());
}

py::array_t<float> as_array(const std::vector<float> & values) {
    return to_array(values, 0, static_cast<py::ssize_t>(values.size()));
}

py::tuple synthesize(VocoderHandle & h, const py::array & mel, const std::optional<py::array> & source_prefix) {
    int n_frames = 0;
    const std::vector<float> values = mel_values(mel, false, &n_frames);
    const std::vector<float> prefix = prefix_values(source_prefix);
    std::vector<float> pcm, source;
    {
        py::gil_scoped_release release;
        pcm = h.vocoder().synthesize(values, n_frames, prefix, &source);
    }
    return py::make_tuple(as_array(pcm), as_array(source));
}

py::array_t<float> predict_f0(VocoderHandle & h, const py::array & mel) {
    int n_frames = 0;
    const std::vector<float> values = mel_values(mel, false, &n_frames);
    std::vector<float> f0;
    {
        py::gil_scoped_release release;
        f0 = h.vocoder().predict_f0(values, n_frames);
    }
    return as_array(f0);
}

py::array_t<float> stream_feed(VocoderHandle & h, const py::array & mel, bool final) {
    int n_frames = 0;
    const std::vector<float> values = mel_values(mel, true, &n_frames);
    std::vector<float> pcm;
    {
        py::gil_scoped_release release;
        pcm = h.stream().feed(values, n_frames, final);
    }
    return as_array(pcm);
}

}  // namespace

void bind_vocoder(py::module_ & m) {
    py::class_<VocoderHandle>(m, "HiftVocoder")
        .def(py::init([](const std::string & path, bool use_gpu, int n_threads, bool add_noise, uint64_t seed) {
                 py::gil_scoped_release release;
                 return std::make_unique<VocoderHandle>(path, use_gpu, n_threads, add_noise, seed);
             }),
             py::arg("hifigan_path"), py::arg("use_gpu") = false, py::arg("n_threads") = 0, py::arg("add_noise") = true,
             py::arg("noise_seed") = 0)
        .def_property_readonly_static("sample_rate", [](py::object) { return omni::HiftVocoder::kSampleRate; })
        .def_property_readonly_static("samples_per_frame",
                                      [](py::object) { return omni::HiftVocoder::kSamplesPerFrame; })
        .def_property_readonly("base_channels", [](VocoderHandle & h) { return h.vocoder().base_channels(); })
        .def_property_readonly("backend", &VocoderHandle::backend_name)
        .def_property_readonly("stream_cached_frames", [](VocoderHandle & h) { return h.stream().cached_frames(); })
        .def("synthesize", &synthesize, py::arg("mel"), py::arg("source_prefix") = py::none())
        .def("f0", &predict_f0, py::arg("mel"))
        .def("stream_feed", &stream_feed, py::arg("mel"), py::arg("final"))
        .def("stream_reset", [](VocoderHandle & h) { h.stream().reset(); });
}

}  // namespace omni_bindings

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>

#include "bindings/arrays.h"
#include "bindings/token2wav_bindings.h"
#include "token2wav/token2mel.h"
#include "token2wav/token2wav.h"

namespace omni_bindings {
namespace {

using release = py::call_guard<py::gil_scoped_release>;

py::array_t<float> shaped(const std::vector<float> & values, std::vector<py::ssize_t> shape) {
    py::array_t<float> out(shape);
    std::copy(values.begin(), values.end(), out.mutable_data());
    return out;
}

py::dict caches_dict(const omni::Token2Mel & t2m, const omni::FlowCaches & c) {
    const py::ssize_t conf_len = t2m.conformer_length(), est_len = t2m.estimator_length();
    const auto & s = t2m.sizes();
    py::dict d;
    d["conformer_cnn_cache"] = shaped(c.conformer_cnn, {1, s.width, s.conv_cache_frames});
    d["conformer_att_cache"] = shaped(c.conformer_att, {s.n_layers, 1, s.n_heads, conf_len, 2 * s.head_dim});
    d["estimator_cnn_cache"] = shaped(c.estimator_cnn, {t2m.n_timesteps(), s.depth, 2, 2 * s.hidden, 2});
    d["estimator_att_cache"] =
        shaped(c.estimator_att, {t2m.n_timesteps(), s.depth, 2, s.dit_heads, est_len, 2 * s.dit_head_dim});
    return d;
}

omni::Token2MelOptions token2mel_options(const std::string & folder, bool use_gpu, int n_threads, int n_timesteps,
                                         uint64_t noise_seed) {
    omni::Token2MelOptions o;
    o.folder = folder;
    o.use_gpu = use_gpu;
    o.n_threads = n_threads;
    o.n_timesteps = n_timesteps;
    o.noise_seed = noise_seed;
    return o;
}

}  // namespace

void bind_token2mel(py::module_ & m) {
    py::class_<omni::Token2Mel>(m, "Token2Mel")
        .def(py::init([](const std::string & folder, bool use_gpu, int n_threads, int n_timesteps, uint64_t seed) {
                 py::gil_scoped_release release;
                 return std::make_unique<omni::Token2Mel>(
                     token2mel_options(folder, use_gpu, n_threads, n_timesteps, seed));
             }),
             py::arg("t2w_dir"), py::arg("use_gpu") = false, py::arg("n_threads") = 0, py::arg("n_timesteps") = 0,
             py::arg("noise_seed") = 0)
        .def_property_readonly("n_timesteps", &omni::Token2Mel::n_timesteps)
        .def_property_readonly("prompt_frames", &omni::Token2Mel::prompt_frames)
        .def_property_readonly("n_mels", &omni::Token2Mel::n_mels)
        .def_property_readonly("backend", &omni::Token2Mel::backend_name)
        .def_property_readonly(
            "cache_lengths",
            [](const omni::Token2Mel & t) { return py::make_tuple(t.conformer_length(), t.estimator_length()); })
        .def_property_readonly(
            "noise",
            [](const omni::Token2Mel & t) { return to_matrix(t.noise(), t.n_mels(), omni::Token2Mel::kNoiseFrames); })
        .def("reset", &omni::Token2Mel::reset, release())
        .def(
            "feed",
            [](omni::Token2Mel & t, const std::vector<int> & tokens, bool last) {
                std::vector<float> mel;
                {
                    py::gil_scoped_release release;
                    mel = t.feed(tokens, last);
                }
                const py::ssize_t frames = static_cast<py::ssize_t>(mel.size()) / t.n_mels();
                return to_matrix(mel, t.n_mels(), frames);
            },
            py::arg("tokens"), py::arg("last"))
        .def("caches", [](const omni::Token2Mel & t) { return caches_dict(t, t.caches()); });

    py::class_<omni::Token2Wav>(m, "Token2Wav")
        .def(py::init([](const std::string & folder, bool use_gpu, int n_threads, int n_timesteps, uint64_t seed,
                         bool vocoder_noise) {
                 py::gil_scoped_release release;
                 omni::Token2WavOptions o;
                 o.flow = token2mel_options(folder, use_gpu, n_threads, n_timesteps, seed);
                 o.vocoder_noise = vocoder_noise;
                 return std::make_unique<omni::Token2Wav>(o);
             }),
             py::arg("t2w_dir"), py::arg("use_gpu") = false, py::arg("n_threads") = 0, py::arg("n_timesteps") = 0,
             py::arg("noise_seed") = 0, py::arg("vocoder_noise") = true)
        .def_property_readonly("n_timesteps", [](const omni::Token2Wav & t) { return t.token2mel().n_timesteps(); })
        .def_property_readonly("noise",
                               [](const omni::Token2Wav & t) {
                                   return to_matrix(t.token2mel().noise(), t.token2mel().n_mels(),
                                                    omni::Token2Mel::kNoiseFrames);
                               })
        .def("reset", &omni::Token2Wav::reset, release())
        .def(
            "push",
            [](omni::Token2Wav & t, const std::vector<int> & tokens, bool final) {
                std::vector<float> pcm;
                {
                    py::gil_scoped_release release;
                    pcm = t.push(tokens, final);
                }
                return to_array(pcm, 0, static_cast<py::ssize_t>(pcm.size()));
            },
            py::arg("tokens"), py::arg("final"));
}

}  // namespace omni_bindings

#include "bindings/tts_bindings.h"

#include <pybind11/stl.h>

#include <memory>

#include "bindings/arrays.h"
#include "tts/speech_generator.h"
#include "tts/speech_sampler.h"
#include "tts/tts_model.h"

namespace omni_bindings {
namespace {

using release = py::call_guard<py::gil_scoped_release>;

// The hidden rows' data, after checking they pair with `ids` (valid while the argument lives, GIL or not).
const float * hidden_rows(const omni::Tts & tts, const std::vector<int> & ids, const FloatArray & hidden) {
    require_matrix(hidden, static_cast<py::ssize_t>(ids.size()), tts.n_llm_embd(), "hidden");
    return hidden.data();
}

py::array_t<float> rows_of(const omni::Tts & tts, const std::vector<int> & ids, bool codes) {
    std::vector<float> rows;
    for (int id : ids) {
        const float * row = codes ? tts.code_row(id) : tts.text_row(id);
        rows.insert(rows.end(), row, row + tts.n_embd());
    }
    return to_matrix(rows, static_cast<py::ssize_t>(ids.size()), tts.n_embd());
}

void bind_sampler(py::module_ & m) {
    py::class_<omni::SpeechSampler>(m, "TtsSampler")
        .def(py::init<const omni::TtsSamplingParams &>(), py::arg("params"))
        .def(
            "process",
            [](const omni::SpeechSampler & s, const FloatArray & logits, const std::vector<int> & history, bool first) {
                const std::vector<float> values = to_vector(logits, static_cast<size_t>(logits.size()));
                return to_array(s.process(values, history, first), 0, static_cast<py::ssize_t>(values.size()));
            },
            py::arg("logits"), py::arg("history") = std::vector<int>{}, py::arg("first") = false)
        .def_static(
            "choose",
            [](const FloatArray & processed, double u) {
                if (!(u >= 0.0 && u < 1.0)) throw py::value_error("u must be in [0, 1)");
                return omni::SpeechSampler::choose(to_vector(processed, static_cast<size_t>(processed.size())), u);
            },
            py::arg("processed"), py::arg("u"))
        .def(
            "sample",
            [](omni::SpeechSampler & s, const FloatArray & logits, const std::vector<int> & history, bool first) {
                return s.sample(to_vector(logits, static_cast<size_t>(logits.size())), history, first);
            },
            py::arg("logits"), py::arg("history") = std::vector<int>{}, py::arg("first") = false);
}

void bind_model(py::module_ & m) {
    py::class_<omni::Tts>(m, "Tts")
        .def(py::init([](const std::string & path, const std::string & projector_path, bool use_gpu, int n_threads,
                         int n_ctx) {
                 py::gil_scoped_release release;
                 return std::make_unique<omni::Tts>(omni::TtsOptions{path, projector_path, use_gpu, n_threads, n_ctx});
             }),
             py::arg("path"), py::arg("projector_path") = "", py::kw_only(), py::arg("use_gpu") = false,
             py::arg("n_threads") = 0, py::arg("n_ctx") = 0)
        .def_property_readonly("n_embd", &omni::Tts::n_embd)
        .def_property_readonly("n_llm_embd", &omni::Tts::n_llm_embd)
        .def_property_readonly("n_layer", &omni::Tts::n_layer)
        .def_property_readonly("n_head", &omni::Tts::n_head)
        .def_property_readonly("n_codes", &omni::Tts::n_codes)
        .def_property_readonly("eos_code", &omni::Tts::eos_code)
        .def_property_readonly("n_ctx", &omni::Tts::n_ctx)
        .def_property_readonly("n_past", &omni::Tts::n_past)
        .def_property_readonly("backend", &omni::Tts::backend_name)
        .def_property_readonly("projector_source", &omni::Tts::projector_source)
        .def(
            "text_embedding", [](const omni::Tts & t, const std::vector<int> & ids) { return rows_of(t, ids, false); },
            py::arg("ids"))
        .def(
            "code_embedding",
            [](const omni::Tts & t, const std::vector<int> & codes) { return rows_of(t, codes, true); },
            py::arg("codes"))
        .def(
            "condition",
            [](omni::Tts & t, const std::vector<int> & ids, const FloatArray & hidden) {
                const float * h = hidden_rows(t, ids, hidden);
                std::vector<float> rows;
                {
                    py::gil_scoped_release release;
                    rows = t.condition(ids, h);
                }
                return to_matrix(rows, static_cast<py::ssize_t>(ids.size()), t.n_embd());
            },
            py::arg("ids"), py::arg("hidden"))
        .def("clear", &omni::Tts::clear)
        .def(
            "forward",
            [](omni::Tts & t, const FloatArray & rows, bool all_logits) {
                require_matrix(rows, -1, t.n_embd(), "rows");
                const int n = static_cast<int>(rows.shape(0));
                std::vector<float> logits;
                {
                    py::gil_scoped_release release;
                    logits = t.forward(rows.data(), n, all_logits);
                }
                return all_logits ? to_matrix(logits, n, t.n_codes()) : to_array(logits, 0, t.n_codes());
            },
            py::arg("rows"), py::arg("all_logits") = false);
}

void bind_generator(py::module_ & m) {
    py::class_<omni::SpeechGenerator>(m, "SpeechGenerator")
        .def(py::init<omni::Tts &, const omni::TtsSamplingParams &>(), py::arg("tts"), py::arg("params"),
             py::keep_alive<1, 2>())
        .def("start_turn", &omni::SpeechGenerator::start_turn, release())
        .def(
            "speak_chunk",
            [](omni::SpeechGenerator & g, const std::vector<int> & ids, const FloatArray & hidden, bool last) {
                const float * h = hidden_rows(g.tts(), ids, hidden);
                py::gil_scoped_release release;
                return g.speak_chunk(ids, h, last);
            },
            py::arg("ids"), py::arg("hidden"), py::arg("last"))
        .def_property_readonly("position", &omni::SpeechGenerator::position);
}

}  // namespace

void bind_tts_options(py::module_ & m) {
    py::class_<omni::TtsSamplingParams>(m, "TtsSamplingParams")
        .def(py::init([](float temperature, float repetition_penalty, int penalty_window, float top_p, int top_k,
                         int min_keep, int max_tokens_per_chunk, int64_t seed) {
                 omni::TtsSamplingParams p;
                 p.temperature = temperature;
                 p.repetition_penalty = repetition_penalty;
                 p.penalty_window = penalty_window;
                 p.top_p = top_p;
                 p.top_k = top_k;
                 p.min_keep = min_keep;
                 p.max_tokens_per_chunk = max_tokens_per_chunk;
                 p.seed = seed;
                 omni::validate(p);
                 return p;
             }),
             py::kw_only(), py::arg("temperature") = 0.8f, py::arg("repetition_penalty") = 1.05f,
             py::arg("penalty_window") = 16, py::arg("top_p") = 0.85f, py::arg("top_k") = 25, py::arg("min_keep") = 3,
             py::arg("max_tokens_per_chunk") = 500, py::arg("seed") = -1)
        .def_readwrite("temperature", &omni::TtsSamplingParams::temperature)
        .def_readwrite("repetition_penalty", &omni::TtsSamplingParams::repetition_penalty)
        .def_readwrite("penalty_window", &omni::TtsSamplingParams::penalty_window)
        .def_readwrite("top_p", &omni::TtsSamplingParams::top_p)
        .def_readwrite("top_k", &omni::TtsSamplingParams::top_k)
        .def_readwrite("min_keep", &omni::TtsSamplingParams::min_keep)
        .def_readwrite("max_tokens_per_chunk", &omni::TtsSamplingParams::max_tokens_per_chunk)
        .def_readwrite("seed", &omni::TtsSamplingParams::seed);
}

void bind_tts(py::module_ & m, py::module_ & internals) {
    bind_sampler(m);
    bind_model(m);
    bind_generator(m);
    internals.def("is_tts_valid", &omni::is_tts_valid, py::arg("token"));
    py::class_<omni::SpeechTokenGrouper>(internals, "SpeechTokenGrouper")
        .def(py::init<int>(), py::arg("group_size") = omni::kSpeechGroup)
        .def("push", &omni::SpeechTokenGrouper::push, py::arg("codes"))
        .def("flush", &omni::SpeechTokenGrouper::flush)
        .def_property_readonly("pending", &omni::SpeechTokenGrouper::pending);
}

}  // namespace omni_bindings

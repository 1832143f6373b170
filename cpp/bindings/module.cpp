// The pybind11 module omni_engine: a thin layer over the pipeline and the stages. Every long call
// releases the GIL; events reach Python on the engine's dispatcher thread, which takes the GIL itself.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "audio/audio_encoder.h"
#include "bindings/arrays.h"
#include "bindings/image_bindings.h"
#include "bindings/token2wav_bindings.h"
#include "bindings/tts_bindings.h"
#include "bindings/vision_bindings.h"
#include "core/backend.h"
#include "core/errors.h"
#include "core/log.h"
#include "llm/chat_format.h"
#include "llm/kv_window.h"
#include "llm/llm.h"
#include "llm/sampler.h"
#include "llm/utf8.h"
#include "pipeline/pipeline.h"

namespace py = pybind11;

namespace {

using omni::Token;
using omni_bindings::FloatArray;
using omni_bindings::to_array;
using omni_bindings::to_vector;

py::dict stats_dict(const omni::TurnStats & s) {
    py::dict d;
    d["prefill_tokens"] = s.prefill_tokens;
    d["prefill_ms"] = s.prefill_ms;
    d["ttft_ms"] = s.ttft_ms;
    d["decode_tokens"] = s.decode_tokens;
    d["decode_ms"] = s.decode_ms;
    d["tokens_per_s"] = s.tokens_per_s();
    d["total_ms"] = s.total_ms;
    d["speech_tokens"] = s.speech_tokens;
    d["tts_ms"] = s.tts_ms;
    d["first_speech_group_ms"] = s.first_speech_ms;
    d["audio_samples"] = s.audio_samples;
    d["token2wav_ms"] = s.token2wav_ms;
    d["first_audio_ms"] = s.first_audio_ms;
    return d;
}

py::dict event_dict(const omni::Event & e) {
    py::dict d;
    d["type"] = omni::to_string(e.type);
    d["turn"] = e.turn;
    switch (e.type) {
        case omni::EventType::text: d["text"] = e.text; break;
        case omni::EventType::tts_chunk:
            d["text"] = e.text;
            d["n_speech_tokens"] = e.n_speech_tokens;
            d["chunk_idx"] = e.chunk_idx;
            d["speech_tokens"] = e.speech_tokens;
            break;
        case omni::EventType::audio: {
            py::array_t<int16_t> pcm(static_cast<py::ssize_t>(e.pcm.size()));
            std::copy(e.pcm.begin(), e.pcm.end(), pcm.mutable_data());
            d["pcm"] = pcm;
            d["sample_rate"] = 24000;
            d["n_input_tokens"] = e.n_input_tokens;
            break;
        }
        case omni::EventType::error: d["message"] = e.message; break;
        case omni::EventType::stats: d.attr("update")(stats_dict(e.stats)); break;
        case omni::EventType::end_of_turn: d["reason"] = e.reason; break;
        case omni::EventType::listen: break;
    }
    return d;
}

// Wraps a Python callable so it is called and destroyed with the GIL held, from any thread.
omni::EventCallback make_event_callback(py::function fn) {
    auto holder = std::shared_ptr<py::function>(new py::function(std::move(fn)), [](py::function * f) {
        py::gil_scoped_acquire gil;
        delete f;
    });
    return [holder](const omni::Event & event) {
        py::gil_scoped_acquire gil;
        try {
            (*holder)(event_dict(event));
        } catch (py::error_already_set & err) {
            omni::log_message(omni::LogLevel::error, std::string("on_event raised: ") + err.what());
        }
    };
}

// The Python-facing engine: the pipeline plus a destructor that does not hold the GIL while threads stop.
class PyEngine {
public:
    explicit PyEngine(const omni::EngineOptions & options) {
        py::gil_scoped_release release;
        pipeline_ = std::make_unique<omni::Pipeline>(options);
    }
    ~PyEngine() { close(); }
    void close() {
        if (!pipeline_) return;
        std::unique_ptr<omni::Pipeline> doomed;
        doomed.swap(pipeline_);
        if (PyGILState_Check()) {
            py::gil_scoped_release release;
            doomed.reset();
        } else {
            doomed.reset();
        }
    }
    omni::Pipeline & get() {
        if (!pipeline_) throw omni::StateError("the engine is closed");
        return *pipeline_;
    }

private:
    std::unique_ptr<omni::Pipeline> pipeline_;
};

const char * state_name(omni::PipelineState state) {
    switch (state) {
        case omni::PipelineState::no_session: return "no_session";
        case omni::PipelineState::idle: return "idle";
        case omni::PipelineState::generating: return "generating";
    }
    return "unknown";
}

void bind_options(py::module_ & m) {
    py::class_<omni::SamplingParams>(m, "SamplingParams")
        .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repetition_penalty,
                         int repetition_window, float length_penalty, int64_t seed) {
                 omni::SamplingParams p;
                 p.temperature = temperature;
                 p.top_k = top_k;
                 p.top_p = top_p;
                 p.min_p = min_p;
                 p.repetition_penalty = repetition_penalty;
                 p.repetition_window = repetition_window;
                 p.length_penalty = length_penalty;
                 p.seed = seed;
                 omni::validate(p);
                 return p;
             }),
             py::kw_only(), py::arg("temperature") = 0.7f, py::arg("top_k") = 100, py::arg("top_p") = 0.8f,
             py::arg("min_p") = 0.0f, py::arg("repetition_penalty") = 1.02f, py::arg("repetition_window") = 128,
             py::arg("length_penalty") = 1.0f, py::arg("seed") = -1)
        .def_readwrite("temperature", &omni::SamplingParams::temperature)
        .def_readwrite("top_k", &omni::SamplingParams::top_k)
        .def_readwrite("top_p", &omni::SamplingParams::top_p)
        .def_readwrite("min_p", &omni::SamplingParams::min_p)
        .def_readwrite("repetition_penalty", &omni::SamplingParams::repetition_penalty)
        .def_readwrite("repetition_window", &omni::SamplingParams::repetition_window)
        .def_readwrite("length_penalty", &omni::SamplingParams::length_penalty)
        .def_readwrite("seed", &omni::SamplingParams::seed);

    py::class_<omni::EngineOptions>(m, "EngineOptions")
        .def(py::init([](std::string model_dir, std::string llm_file, int n_ctx, int n_batch, int n_gpu_layers,
                         int n_threads, std::string kv_type, std::string flash_attn) {
                 return omni::EngineOptions{
                     std::move(model_dir), std::move(llm_file),  n_ctx, n_batch, n_gpu_layers, n_threads,
                     std::move(kv_type),   std::move(flash_attn)};
             }),
             py::kw_only(), py::arg("model_dir") = "", py::arg("llm_file") = "", py::arg("n_ctx") = 4096,
             py::arg("n_batch") = 512, py::arg("n_gpu_layers") = -1, py::arg("n_threads") = 0,
             py::arg("kv_type") = "f16", py::arg("flash_attn") = "auto")
        .def_readwrite("model_dir", &omni::EngineOptions::model_dir)
        .def_readwrite("llm_file", &omni::EngineOptions::llm_file)
        .def_readwrite("n_ctx", &omni::EngineOptions::n_ctx)
        .def_readwrite("n_batch", &omni::EngineOptions::n_batch)
        .def_readwrite("n_gpu_layers", &omni::EngineOptions::n_gpu_layers)
        .def_readwrite("n_threads", &omni::EngineOptions::n_threads)
        .def_readwrite("kv_type", &omni::EngineOptions::kv_type)
        .def_readwrite("flash_attn", &omni::EngineOptions::flash_attn)
        .def_readwrite("vision_layers", &omni::EngineOptions::vision_layers);

    py::class_<omni::SessionOptions>(m, "SessionOptions")
        .def(py::init([](std::string media_type, bool duplex, std::string language, bool speak,
                         omni::SamplingParams sampling, omni::TtsSamplingParams tts_sampling, int max_new_tokens,
                         int max_preserved_context) {
                 return omni::SessionOptions{
                     std::move(media_type), duplex,         std::move(language),  speak, sampling,
                     tts_sampling,          max_new_tokens, max_preserved_context};
             }),
             py::kw_only(), py::arg("media_type") = "audio", py::arg("duplex") = false, py::arg("language") = "zh",
             py::arg("speak") = true, py::arg("sampling") = omni::SamplingParams{},
             py::arg("tts_sampling") = omni::TtsSamplingParams{}, py::arg("max_new_tokens") = 2048,
             py::arg("max_preserved_context") = 2048)
        .def_readwrite("media_type", &omni::SessionOptions::media_type)
        .def_readwrite("duplex", &omni::SessionOptions::duplex)
        .def_readwrite("language", &omni::SessionOptions::language)
        .def_readwrite("speak", &omni::SessionOptions::speak)
        .def_readwrite("ignore_eos", &omni::SessionOptions::ignore_eos)
        .def_readwrite("sampling", &omni::SessionOptions::sampling)
        .def_readwrite("tts_sampling", &omni::SessionOptions::tts_sampling)
        .def_readwrite("max_new_tokens", &omni::SessionOptions::max_new_tokens)
        .def_readwrite("max_preserved_context", &omni::SessionOptions::max_preserved_context);
}

void bind_engine(py::module_ & m) {
    using release = py::call_guard<py::gil_scoped_release>;
    py::class_<PyEngine>(m, "Engine")
        .def(py::init<const omni::EngineOptions &>(), py::arg("options"))
        .def_property_readonly("info",
                               [](PyEngine & e) {
                                   const omni::EngineInfo info = e.get().info();
                                   py::dict d;
                                   d["llm_path"] = info.llm_path;
                                   d["n_vocab"] = info.n_vocab;
                                   d["n_embd"] = info.n_embd;
                                   d["n_layer"] = info.n_layer;
                                   d["n_ctx"] = info.n_ctx;
                                   d["n_ctx_train"] = info.n_ctx_train;
                                   d["backend"] = info.backend;
                                   d["audio_path"] = info.audio_path;
                                   d["tts_path"] = info.tts_path;
                                   d["token2wav_path"] = info.token2wav_path;
                                   d["vision_path"] = info.vision_path;
                                   py::dict stages;
                                   stages["llm"] = true;
                                   stages["audio"] = !info.audio_path.empty();
                                   stages["vision"] = !info.vision_path.empty();
                                   stages["tts"] = !info.tts_path.empty();
                                   stages["token2wav"] = !info.token2wav_path.empty();
                                   d["stages"] = stages;
                                   return d;
                               })
        .def(
            "start_session",
            [](PyEngine & e, const omni::SessionOptions & options, py::function on_event, py::object ref_audio) {
                std::vector<float> voice;
                if (!ref_audio.is_none()) {
                    const auto pcm = ref_audio.cast<FloatArray>();
                    if (pcm.ndim() != 1) throw py::value_error("ref_audio must be 1-D mono float32 samples at 16 kHz");
                    voice.assign(pcm.data(), pcm.data() + pcm.size());
                    if (voice.empty()) throw omni::StateError("the reference voice is empty");
                }
                omni::EventCallback callback = make_event_callback(std::move(on_event));
                py::gil_scoped_release release;
                e.get().start_session(options, std::move(callback), voice);
            },
            py::arg("options"), py::arg("on_event"), py::arg("ref_audio") = py::none(),
            "start a conversation; ref_audio: optional reference voice (16 kHz mono float32) for the system prompt")
        .def(
            "prefill_text", [](PyEngine & e, const std::string & text) { return e.get().prefill_text(text); },
            py::arg("text"), release())
        .def(
            "prefill_audio",
            [](PyEngine & e, const FloatArray & pcm) {
                if (pcm.ndim() != 1) throw py::value_error("pcm must be 1-D mono float32 samples at 16 kHz");
                const float * data = pcm.data();
                const auto n = static_cast<size_t>(pcm.size());
                py::gil_scoped_release release;
                return e.get().prefill_audio(data, n);
            },
            py::arg("pcm"), "append one user audio clip (16 kHz mono float32); returns the positions added")
        .def(
            "prefill_image",
            [](PyEngine & e, const py::array & array, int max_slices) {
                const omni_bindings::RgbArray rgb = omni_bindings::require_rgb(array);
                const omni::ImageSize size = omni_bindings::rgb_size(rgb);
                py::gil_scoped_release release;
                return e.get().prefill_image(rgb.data(), size.width, size.height, max_slices);
            },
            py::arg("rgb"), py::arg("max_slices") = 0,
            "append one image (uint8 RGB, (h, w, 3)) as overview + slices; returns the positions added")
        .def(
            "generate",
            [](PyEngine & e, int max_new_tokens, float length_penalty) {
                return e.get().generate(max_new_tokens, length_penalty);
            },
            py::arg("max_new_tokens") = -1, py::arg("length_penalty") = -1.0f, release())
        .def(
            "wait", [](PyEngine & e, double timeout) { return e.get().wait(timeout); }, py::arg("timeout") = -1.0,
            release())
        .def(
            "stop", [](PyEngine & e) { e.get().stop(); }, release())
        .def(
            "break_turn", [](PyEngine & e) { e.get().break_turn(); }, release())
        .def(
            "reset", [](PyEngine & e) { e.get().reset(); }, release())
        .def("close", &PyEngine::close)
        .def(
            "__enter__", [](PyEngine & e) -> PyEngine & { return e; }, py::return_value_policy::reference)
        .def("__exit__", [](PyEngine & e, py::args) { e.close(); })
        .def_property_readonly("state", [](PyEngine & e) { return state_name(e.get().state()); })
        .def_property_readonly("n_past", [](PyEngine & e) { return e.get().n_past(); })
        .def_property_readonly("n_keep", [](PyEngine & e) { return e.get().n_keep(); })
        .def("context_tokens", [](PyEngine & e) { return e.get().context_tokens(); }, release());
}

void bind_llm(py::module_ & m) {
    using release = py::call_guard<py::gil_scoped_release>;
    py::class_<omni::Llm>(m, "Llm")
        .def(py::init([](const std::string & path, int n_ctx, int n_batch, int n_gpu_layers, int n_threads,
                         const std::string & kv_type, const std::string & flash_attn) {
                 py::gil_scoped_release release;
                 return std::make_unique<omni::Llm>(
                     omni::LlmOptions{path, n_ctx, n_batch, n_gpu_layers, n_threads, kv_type, flash_attn});
             }),
             py::arg("path"), py::kw_only(), py::arg("n_ctx") = 512, py::arg("n_batch") = 512,
             py::arg("n_gpu_layers") = 0, py::arg("n_threads") = 0, py::arg("kv_type") = "f16",
             py::arg("flash_attn") = "auto")
        .def_property_readonly("n_vocab", &omni::Llm::n_vocab)
        .def_property_readonly("n_embd", &omni::Llm::n_embd)
        .def_property_readonly("n_ctx", &omni::Llm::n_ctx)
        .def_property_readonly("n_past", &omni::Llm::n_past)
        .def("tokenize", &omni::Llm::tokenize, py::arg("text"), py::arg("parse_special") = true, release())
        .def(
            "token_to_piece", [](omni::Llm & llm, Token token) { return py::bytes(llm.token_piece(token)); },
            py::arg("token"))
        .def(
            "eval_tokens",
            [](omni::Llm & llm, const std::vector<Token> & tokens) {
                std::vector<float> logits;
                {
                    py::gil_scoped_release release;
                    llm.eval_tokens(tokens, &logits);
                }
                return to_array(logits, 0, llm.n_vocab());
            },
            py::arg("tokens"))
        .def(
            "eval_embeddings",
            [](omni::Llm & llm, const FloatArray & rows) {
                if (rows.ndim() != 2 || rows.shape(1) != llm.n_embd()) {
                    throw py::value_error("rows must have shape (n, " + std::to_string(llm.n_embd()) + ")");
                }
                std::vector<float> logits;
                {
                    py::gil_scoped_release release;
                    llm.eval_embeddings(rows.data(), static_cast<int>(rows.shape(0)), &logits);
                }
                return to_array(logits, 0, llm.n_vocab());
            },
            py::arg("rows"))
        .def(
            "step",
            [](omni::Llm & llm, Token token) {
                std::vector<float> logits;
                std::vector<float> hidden;
                {
                    py::gil_scoped_release release;
                    llm.step(token, logits, hidden);
                }
                return py::make_tuple(to_array(logits, 0, llm.n_vocab()), to_array(hidden, 0, llm.n_embd()));
            },
            py::arg("token"))
        .def(
            "eval_all",
            [](omni::Llm & llm, const std::vector<Token> & tokens) {
                std::vector<float> logits;
                std::vector<float> hidden;
                {
                    py::gil_scoped_release release;
                    llm.eval_all(tokens, logits, hidden);
                }
                const auto n = static_cast<py::ssize_t>(tokens.size());
                return py::make_tuple(to_array(logits, n, llm.n_vocab()), to_array(hidden, n, llm.n_embd()));
            },
            py::arg("tokens"))
        .def("clear", &omni::Llm::clear, release())
        .def("remove", &omni::Llm::remove, py::arg("p0"), py::arg("p1"), release());
}

py::array_t<float> rows_array(const omni::AudioRows & rows, int width) {
    return to_array(rows.data, rows.n_rows, width);
}

void require_mel_shape(const omni::AudioEncoder & enc, const FloatArray & mel) {
    if (mel.ndim() != 2 || mel.shape(0) != enc.n_mel()) {
        throw py::value_error("mel must have shape (" + std::to_string(enc.n_mel()) + ", frames)");
    }
}

void bind_audio(py::module_ & m) {
    py::class_<omni::AudioEncoder>(m, "AudioEncoder")
        .def(py::init([](const std::string & path, bool use_gpu, int n_threads) {
                 py::gil_scoped_release release;
                 return std::make_unique<omni::AudioEncoder>(omni::AudioEncoderOptions{path, use_gpu, n_threads});
             }),
             py::arg("path"), py::kw_only(), py::arg("use_gpu") = false, py::arg("n_threads") = 0)
        .def_property_readonly("n_embd_out", &omni::AudioEncoder::n_embd_out)
        .def_property_readonly("backend", &omni::AudioEncoder::backend_name)
        .def_property_readonly("cached_positions", &omni::AudioEncoder::cached_positions)
        .def("reset_stream", &omni::AudioEncoder::reset_stream)
        .def(
            "encode_chunk",
            [](omni::AudioEncoder & enc, const FloatArray & pcm) {
                omni::AudioRows rows;
                {
                    py::gil_scoped_release release;
                    rows = enc.encode_chunk(pcm.data(), static_cast<size_t>(pcm.size()));
                }
                return rows_array(rows, enc.n_embd_out());
            },
            py::arg("pcm"), "one streamed chunk of 16 kHz mono float32 PCM (uses and extends the encoder cache)")
        .def(
            "encode_chunk_mel",
            [](omni::AudioEncoder & enc, const FloatArray & mel) {
                require_mel_shape(enc, mel);
                omni::AudioRows rows;
                {
                    py::gil_scoped_release release;
                    rows = enc.encode_chunk_mel(mel.data(), static_cast<int>(mel.shape(1)));
                }
                return rows_array(rows, enc.n_embd_out());
            },
            py::arg("mel"))
        .def(
            "mel",
            [](const omni::AudioEncoder & enc, const FloatArray & pcm) {
                int n_frames = 0;
                std::vector<float> mel;
                {
                    py::gil_scoped_release release;
                    mel = enc.mel(pcm.data(), static_cast<size_t>(pcm.size()), &n_frames);
                }
                return to_array(mel, static_cast<py::ssize_t>(mel.size() / std::max(n_frames, 1)), n_frames);
            },
            py::arg("pcm"), "normalised log-mel (n_mel, frames) of 16 kHz mono float32 PCM")
        .def(
            "encode_mel",
            [](omni::AudioEncoder & enc, const FloatArray & mel) {
                require_mel_shape(enc, mel);
                omni::AudioRows rows;
                {
                    py::gil_scoped_release release;
                    rows = enc.encode_mel(mel.data(), static_cast<int>(mel.shape(1)));
                }
                return rows_array(rows, enc.n_embd_out());
            },
            py::arg("mel"))
        .def(
            "encode",
            [](omni::AudioEncoder & enc, const FloatArray & pcm) {
                omni::AudioRows rows;
                {
                    py::gil_scoped_release release;
                    rows = enc.encode(pcm.data(), static_cast<size_t>(pcm.size()));
                }
                return rows_array(rows, enc.n_embd_out());
            },
            py::arg("pcm"), "LLM embedding rows (n, n_embd_out) of 16 kHz mono float32 PCM (10 per second)");
}

void bind_sampler(py::module_ & m) {
    py::class_<omni::Sampler>(m, "Sampler")
        .def(py::init<const omni::SamplingParams &>(), py::arg("params"))
        .def(
            "apply",
            [](const omni::Sampler & s, const FloatArray & logits, const std::vector<Token> & history,
               const std::vector<Token> & terminators, const std::vector<Token> & forbidden) {
                const std::vector<float> values = to_vector(logits, static_cast<size_t>(logits.size()));
                return to_array(s.probabilities(values, history, terminators, forbidden), 0,
                                static_cast<py::ssize_t>(values.size()));
            },
            py::arg("logits"), py::arg("history") = std::vector<Token>{}, py::arg("terminators") = std::vector<Token>{},
            py::arg("forbidden") = std::vector<Token>{})
        .def(
            "sample",
            [](omni::Sampler & s, const FloatArray & logits, const std::vector<Token> & history,
               const std::vector<Token> & terminators, const std::vector<Token> & forbidden) {
                return s.sample(to_vector(logits, static_cast<size_t>(logits.size())), history, terminators, forbidden);
            },
            py::arg("logits"), py::arg("history") = std::vector<Token>{}, py::arg("terminators") = std::vector<Token>{},
            py::arg("forbidden") = std::vector<Token>{});
}

// Pure pieces exposed for exact unit tests.
py::module_ bind_internals(py::module_ & m) {
    py::module_ internals = m.def_submodule("internals", "pure engine pieces, exposed for tests");
    py::class_<omni::Utf8Accumulator>(internals, "Utf8Accumulator")
        .def(py::init<>())
        .def("push", [](omni::Utf8Accumulator & a, const py::bytes & data) { return a.push(std::string(data)); })
        .def("flush", &omni::Utf8Accumulator::flush);
    internals.def(
        "system_prompt",
        [](const std::string & media, const std::string & language) {
            const omni::SystemPrompt p =
                omni::simplex_system_prompt(omni::parse_media_type(media), omni::parse_language(language));
            py::dict d;
            d["prefix"] = p.prefix;
            d["suffix"] = p.suffix;
            d["text_only"] = p.text_only;
            return d;
        },
        py::arg("media_type"), py::arg("language"));
    internals.def("assistant_header", &omni::assistant_header, py::arg("speak"));
    internals.def("turn_close", &omni::turn_close, py::arg("speak"));
    internals.def("plan_slide", [](int n_keep, int n_past, const std::vector<int> & round_starts, int open_round_start,
                                   int max_preserved) {
        const omni::DropSpan span = omni::plan_slide(n_keep, n_past, round_starts, open_round_start, max_preserved);
        return py::make_tuple(span.begin, span.end);
    });
    return internals;
}

void bind_system(py::module_ & m) {
    m.def("system_info", [] {
        const omni::SystemInfo info = omni::query_system_info();
        py::dict d;
        d["backends"] = info.backends;
        py::list devices;
        for (const auto & dev : info.devices) {
            py::dict dd;
            dd["name"] = dev.name;
            dd["description"] = dev.description;
            dd["type"] = dev.type;
            dd["memory_free"] = dev.memory_free;
            dd["memory_total"] = dev.memory_total;
            devices.append(dd);
        }
        d["devices"] = devices;
        d["has_gpu"] = info.has_gpu;
        d["cuda"] = std::find(info.backends.begin(), info.backends.end(), "CUDA") != info.backends.end();
        d["metal"] = std::find(info.backends.begin(), info.backends.end(), "Metal") != info.backends.end();
        d["llama_system_info"] = info.llama_system_info;
        return d;
    });
    m.def(
        "set_log_callback",
        [](py::object fn) {
            if (fn.is_none()) {
                omni::set_log_sink(nullptr);
                return;
            }
            auto holder =
                std::shared_ptr<py::function>(new py::function(fn.cast<py::function>()), [](py::function * f) {
                    py::gil_scoped_acquire gil;
                    delete f;
                });
            omni::set_log_sink([holder](omni::LogLevel level, const std::string & message) {
                if (!Py_IsInitialized()) return;
                py::gil_scoped_acquire gil;
                try {
                    (*holder)(omni::log_level_name(level), message);
                } catch (py::error_already_set &) {
                }
            });
        },
        py::arg("callback"));
    m.def(
        "set_log_level",
        [](const std::string & level) {
            if (level == "debug")
                omni::set_log_min_level(omni::LogLevel::debug);
            else if (level == "info")
                omni::set_log_min_level(omni::LogLevel::info);
            else if (level == "warning")
                omni::set_log_min_level(omni::LogLevel::warn);
            else if (level == "error")
                omni::set_log_min_level(omni::LogLevel::error);
            else
                throw py::value_error("level must be debug, info, warning or error");
        },
        py::arg("level"));
}

}  // namespace

PYBIND11_MODULE(omni_engine, m) {
    m.doc() = "omni-app engine: MiniCPM-o 4.5 GGUF pipeline on llama.cpp/ggml";
#ifdef OMNI_VERSION
    m.attr("__version__") = OMNI_VERSION;
#else
    m.attr("__version__") = "dev";
#endif
    m.attr("LLAMA_CPP_COMMIT") = OMNI_LLAMA_CPP_COMMIT;

    auto engine_error = py::register_exception<omni::EngineError>(m, "EngineError", PyExc_RuntimeError);
    py::register_exception<omni::ModelFileError>(m, "ModelFileError", engine_error.ptr());
    py::register_exception<omni::BusyError>(m, "BusyError", engine_error.ptr());
    auto state_error = py::register_exception<omni::StateError>(m, "StateError", engine_error.ptr());
    py::register_exception<omni::ContextFullError>(m, "ContextFullError", state_error.ptr());

    bind_system(m);
    omni_bindings::bind_tts_options(m);  // before bind_options: SessionOptions defaults to TtsSamplingParams{}
    bind_options(m);
    bind_engine(m);
    bind_llm(m);
    bind_sampler(m);
    bind_audio(m);
    py::module_ internals = bind_internals(m);
    omni_bindings::bind_tts(m, internals);
    omni_bindings::bind_vocoder(m);
    omni_bindings::bind_token2mel(m);
    omni_bindings::bind_image_preprocess(m);
    omni_bindings::bind_vision(m, internals);
}

// The engine's one pipeline: owns the stages, the stage threads, the queues and the session state machine.
// Every public method may be called from any thread; long ones block the caller (never the stages).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "audio/audio_encoder.h"
#include "llm/chat_format.h"
#include "llm/llm.h"
#include "llm/sampler.h"
#include "pipeline/audio_worker.h"
#include "pipeline/event_sink.h"
#include "pipeline/events.h"
#include "pipeline/queue.h"
#include "pipeline/speech_worker.h"
#include "tts/speech_sampler.h"
#include "tts/tts_model.h"
#include "vision/vision_encoder.h"

namespace omni {

struct EngineOptions {
    std::string model_dir;
    std::string llm_file;  // "": choose in model_dir (Q4_K_M > Q8_0 > F16 > any top-level .gguf)
    int n_ctx = 4096;
    int n_batch = 512;
    int n_gpu_layers = -1;
    int n_threads = 0;
    std::string kv_type = "f16";      // KV cache type: f16 | f32 | q8_0
    std::string flash_attn = "auto";  // auto | on | off
    int vision_layers = 0;            // ViT layers; 0: as the PyTorch model (VisionEncoderOptions::n_layers)
};

struct SessionOptions {
    std::string media_type = "audio";
    bool duplex = false;
    std::string language = "zh";
    bool speak = true;
    SamplingParams sampling;
    TtsSamplingParams tts_sampling;
    int max_new_tokens = 2048;
    int max_preserved_context = 2048;
    bool ignore_eos = false;  // bench only: the answer never ends by itself, always max_new_tokens tokens
};

struct EngineInfo {
    std::string llm_path;
    int n_vocab = 0;
    int n_embd = 0;
    int n_layer = 0;
    int n_ctx = 0;
    int n_ctx_train = 0;
    std::string backend;
    std::string audio_path;      // "" when the model directory has no audio encoder
    std::string tts_path;        // "" when the model directory has no TTS
    std::string token2wav_path;  // the Token2Wav folder; "" without it (or without the TTS)
    std::string vision_path;     // "" when the model directory has no vision encoder
};

enum class PipelineState { no_session, idle, generating };

// The LLM file to use in an official model directory (ModelFileError naming the directory if none).
std::string find_llm_file(const std::string & model_dir);

class Pipeline {
public:
    explicit Pipeline(const EngineOptions & options);
    ~Pipeline();
    Pipeline(const Pipeline &) = delete;
    Pipeline & operator=(const Pipeline &) = delete;

    // Ends any turn, clears the conversation and prefills the system prompt.
    // ref_audio: an optional reference voice (16 kHz mono float32) placed in the system prompt (pipeline.md §3.1);
    // without one the documented text-only system prompt is used.
    void start_session(const SessionOptions & options, EventCallback callback,
                       const std::vector<float> & ref_audio = {});
    // Appends typed user text to the current user turn; returns the number of tokens added.
    int prefill_text(const std::string & text);
    // Appends one user audio clip (16 kHz mono float32) as <|audio_start|> rows <|audio_end|>; returns the
    // number of positions added. StateError without the audio stage, for empty or non-finite audio.
    int prefill_audio(const float * pcm, size_t n_samples);
    // Appends one image (interleaved RGB8, height x width x 3) as pipeline.md §3.3 lays it out:
    // <image> overview rows </image>, then <slice> rows </slice> per slice (max_slices, 0..9), the slices of one
    // grid row side by side and the grid rows separated by "\n" (the PyTorch reference's rule). Returns the
    // positions added. StateError without the vision stage; invalid_argument for a bad size or max_slices.
    int prefill_image(const uint8_t * rgb, int width, int height, int max_slices);
    bool has_audio() const { return audio_ != nullptr; }
    bool has_vision() const { return vision_ != nullptr; }
    bool has_tts() const { return tts_ != nullptr; }
    bool has_token2wav() const { return token2wav_ != nullptr; }
    // Starts one answer on the LLM thread and returns its turn id at once. max_new_tokens <= 0 and
    // length_penalty <= 0 mean the session's values.
    int generate(int max_new_tokens = -1, float length_penalty = -1.0f);
    // Blocks until the running turn's last event was delivered; false on timeout (timeout_s < 0: no limit).
    bool wait(double timeout_s = -1.0);
    void stop();
    void break_turn();
    void reset();
    void close();

    PipelineState state() const;
    int n_past() const { return n_past_.load(); }
    int n_keep() const { return n_keep_.load(); }
    std::vector<Token> context_tokens();
    EngineInfo info() const { return info_; }

private:
    struct SpecialTokens {
        Token tts_eos = -1;
        Token im_end = -1;
        Token endoftext = -1;
        std::vector<Token> speech_forbidden;   // punctuation the reference forbids in speak mode
        std::vector<Token> end_of_generation;  // every token that ends an answer (forbidden with ignore_eos)
    };
    struct Session {
        SessionOptions options;
        MediaType media = MediaType::audio;
        Language language = Language::zh;
    };

    void llm_thread_main();
    template <typename F>
    auto call_on_llm(F && fn) -> decltype(fn());

    void resolve_special_tokens();
    void load_audio_stage(const EngineOptions & options);
    void load_vision_stage(const EngineOptions & options);
    int eval_image(const EncodedImage & image);
    void load_tts_stage(const EngineOptions & options);
    void load_token2wav_stage(const EngineOptions & options);
    void prefill_system_prompt(const std::vector<float> & ref_audio);
    void check_audio(const float * pcm, size_t n_samples, const char * what) const;
    // Both return how many positions they wrote (the window may slide first, so n_past can shrink).
    int eval_text(const std::string & text, bool parse_special, std::vector<float> * logits);
    int eval_tokens(const std::vector<Token> & tokens, std::vector<float> * logits);
    int eval_rows(const std::vector<float> & rows, int n_rows);
    void require_idle_session();
    void ensure_room(int n_new);
    void slide_window();
    void run_turn(int turn, int max_new_tokens, float length_penalty, double t_generate);
    std::string generate_tokens(int turn, int max_new_tokens, float length_penalty, TurnStats & stats,
                                double t_generate, SpeechChunkBuilder * speech);
    bool hand_turn_end_to_speech(SpeechChunkBuilder & speech, const std::string & reason, const TurnStats & stats);
    void close_turn();
    void emit(Event event);
    void on_turn_ending(const Event & event);
    void on_delivered(const Event & event);
    void request_stop(const char * reason);
    void require_not_dispatcher(const char * what) const;

    EngineOptions options_;
    EngineInfo info_;
    std::unique_ptr<Llm> llm_;
    std::unique_ptr<AudioEncoder> audio_;
    std::unique_ptr<VisionEncoder> vision_;
    std::unique_ptr<Tts> tts_;
    SpecialTokens special_;

    // Touched only on the LLM thread (or before it starts / after it ends).
    std::optional<Session> session_;
    std::unique_ptr<Sampler> sampler_;
    std::vector<Token> context_;     // mirror of the KV cache; embedding rows are -1
    std::vector<int> round_starts_;  // starts of completed rounds after the system prompt
    int open_round_start_ = 0;
    bool prefilling_system_ = false;  // the window must not slide into a half-written system prompt
    int pending_prefill_tokens_ = 0;
    double pending_prefill_ms_ = 0.0;

    std::atomic<int> n_past_{0};
    std::atomic<int> n_keep_{0};

    // Turn control, shared between callers, the LLM thread and the dispatcher.
    mutable std::mutex control_mutex_;
    std::condition_variable idle_cv_;
    bool has_session_ = false;
    bool turn_active_ = false;  // a turn is running: new input is refused
    int delivered_turn_ = 0;    // the newest turn whose end_of_turn the callback has returned from
    bool abortable_ = false;
    int issued_turn_ = 0;
    std::string stop_reason_ = "stop";
    std::atomic<int> stop_through_turn_{0};
    std::atomic<bool> abort_eval_{false};
    bool closed_ = false;

    std::unique_ptr<EventSink> sink_;
    BlockingQueue<std::function<void()>> llm_jobs_;
    std::thread llm_thread_;
    std::unique_ptr<SpeechWorker> speech_;  // the TTS thread (only with the TTS stage)
    std::unique_ptr<Token2Wav> token2wav_;
    std::unique_ptr<AudioWorker> audio_out_;  // the Token2Wav thread (only with the TTS and Token2Wav stages)
};

}  // namespace omni

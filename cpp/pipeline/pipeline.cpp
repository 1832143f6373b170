#include "pipeline/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>

#include "core/backend.h"
#include "core/errors.h"
#include "core/log.h"
#include "llm/kv_window.h"
#include "llm/utf8.h"

namespace omni {
namespace fs = std::filesystem;

namespace {

double now_ms() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

// Characters the PyTorch reference never lets the model say in speak mode (pipeline.md §6.1).
const char * const kSpeechForbidden[] = {":",  "：", "；", "#", "“",  "”",  "‘", "’", "@", "*", "【", "】",
                                         "「", "」", "(",  ")", "（", "）", "[", "]", "&", "/", "$"};

int quant_rank(const std::string & name) {
    if (name.find("Q4_K_M") != std::string::npos) return 0;
    if (name.find("Q8_0") != std::string::npos) return 1;
    if (name.find("F16") != std::string::npos) return 2;
    return 3;
}

}  // namespace

// A stage's official file in the model directory, or "" when it has none (every stage but the LLM is optional).
std::string find_stage_file(const std::string & model_dir, const char * folder, const char * name) {
    if (model_dir.empty()) return "";
    const fs::path path = fs::path(model_dir) / folder / name;
    std::error_code ec;
    return fs::is_regular_file(path, ec) ? path.string() : "";
}

std::string find_llm_file(const std::string & model_dir) {
    std::error_code ec;
    if (!fs::is_directory(model_dir, ec)) {
        throw ModelFileError("model directory not found: " + model_dir);
    }
    std::vector<fs::path> candidates;
    for (const auto & entry : fs::directory_iterator(model_dir, ec)) {
        const fs::path & p = entry.path();
        if (entry.is_regular_file() && p.extension() == ".gguf" &&
            p.filename().string().find("mmproj") == std::string::npos) {
            candidates.push_back(p);
        }
    }
    if (candidates.empty()) {
        throw ModelFileError("no LLM file (MiniCPM-o-4_5-<quant>.gguf) at the top level of " + model_dir);
    }
    std::sort(candidates.begin(), candidates.end(), [](const fs::path & a, const fs::path & b) {
        const int ra = quant_rank(a.filename().string());
        const int rb = quant_rank(b.filename().string());
        return ra != rb ? ra < rb : a.filename() < b.filename();
    });
    return candidates.front().string();
}

Pipeline::Pipeline(const EngineOptions & options) : options_(options) {
    if (options.n_ctx < 64) throw StateError("n_ctx must be at least 64, got " + std::to_string(options.n_ctx));
    if (options.n_batch < 1) throw StateError("n_batch must be at least 1, got " + std::to_string(options.n_batch));
    LlmOptions llm_options;
    llm_options.path = options.llm_file.empty() ? find_llm_file(options.model_dir) : options.llm_file;
    llm_options.n_ctx = options.n_ctx;
    llm_options.n_batch = options.n_batch;
    llm_options.n_gpu_layers = options.n_gpu_layers;
    llm_options.n_threads = options.n_threads;
    llm_options.kv_type = options.kv_type;
    llm_options.flash_attn = options.flash_attn;
    const double t0 = now_ms();
    llm_ = std::make_unique<Llm>(llm_options);
    llm_->set_abort_flag(&abort_eval_);
    resolve_special_tokens();
    info_ = EngineInfo{llm_->path(),
                       llm_->n_vocab(),
                       llm_->n_embd(),
                       llm_->n_layer(),
                       llm_->n_ctx(),
                       llm_->n_ctx_train(),
                       primary_backend_name(options.n_gpu_layers),
                       "",
                       ""};
    load_audio_stage(options);
    load_vision_stage(options);
    load_tts_stage(options);
    load_token2wav_stage(options);
    log_message(LogLevel::info, "LLM loaded from " + info_.llm_path + " in " +
                                    std::to_string(static_cast<int>(now_ms() - t0)) + " ms (backend " + info_.backend +
                                    ")");
    llm_thread_ = std::thread([this] { llm_thread_main(); });
}

void Pipeline::load_audio_stage(const EngineOptions & options) {
    const std::string path = find_stage_file(options.model_dir, "audio", "MiniCPM-o-4_5-audio-F16.gguf");
    if (path.empty()) return;
    audio_ = std::make_unique<AudioEncoder>(AudioEncoderOptions{path, options.n_gpu_layers != 0, options.n_threads});
    if (audio_->n_embd_out() != llm_->n_embd()) {
        throw ModelFileError(path + ": the audio projector outputs " + std::to_string(audio_->n_embd_out()) +
                             " values per row but the LLM expects " + std::to_string(llm_->n_embd()));
    }
    info_.audio_path = path;
}

void Pipeline::load_vision_stage(const EngineOptions & options) {
    const std::string path = find_stage_file(options.model_dir, "vision", "MiniCPM-o-4_5-vision-F16.gguf");
    if (path.empty()) return;
    vision_ = std::make_unique<VisionEncoder>(
        VisionEncoderOptions{path, options.n_gpu_layers != 0, options.n_threads, options.vision_layers});
    if (vision_->n_embd_out() != llm_->n_embd()) {
        throw ModelFileError(path + ": the resampler outputs " + std::to_string(vision_->n_embd_out()) +
                             " values per row but the LLM expects " + std::to_string(llm_->n_embd()));
    }
    info_.vision_path = path;
}

void Pipeline::load_tts_stage(const EngineOptions & options) {
    const std::string path = find_stage_file(options.model_dir, "tts", "MiniCPM-o-4_5-tts-F16.gguf");
    if (path.empty()) return;
    TtsOptions tts_options;
    tts_options.path = path;
    tts_options.projector_path = find_stage_file(options.model_dir, "tts", "MiniCPM-o-4_5-projector-F16.gguf");
    tts_options.use_gpu = options.n_gpu_layers != 0;
    tts_options.n_threads = options.n_threads;
    tts_ = std::make_unique<Tts>(tts_options);
    if (tts_->n_llm_embd() != llm_->n_embd()) {
        throw ModelFileError(path + ": the TTS projector takes " + std::to_string(tts_->n_llm_embd()) +
                             " values per hidden state but the LLM's are " + std::to_string(llm_->n_embd()));
    }
    info_.tts_path = path;
    speech_ = std::make_unique<SpeechWorker>(
        *tts_, [this](Event e) { emit(std::move(e)); }, [this](int turn) { return stop_through_turn_ >= turn; },
        now_ms);
}

// The official folder is token2wav-gguf/; token2wav/ is accepted too. All five files must be there.
void Pipeline::load_token2wav_stage(const EngineOptions & options) {
    if (!speech_) return;
    for (const char * folder : {"token2wav-gguf", "token2wav"}) {
        bool complete = true;
        for (const char * name :
             {"encoder.gguf", "flow_matching.gguf", "flow_extra.gguf", "hifigan2.gguf", "prompt_cache.gguf"}) {
            complete = complete && !find_stage_file(options.model_dir, folder, name).empty();
        }
        if (!complete) continue;
        Token2WavOptions t2w;
        t2w.flow.folder = (fs::path(options.model_dir) / folder).string();
        t2w.flow.use_gpu = options.n_gpu_layers != 0;
        t2w.flow.n_threads = options.n_threads;
        token2wav_ = std::make_unique<Token2Wav>(t2w);
        info_.token2wav_path = t2w.flow.folder;
        audio_out_ = std::make_unique<AudioWorker>(
            *token2wav_, [this](Event e) { emit(std::move(e)); },
            [this](int turn) { return stop_through_turn_ >= turn; }, now_ms);
        speech_->set_sink([this](SpeechGroup group) { audio_out_->push(std::move(group)); });
        return;
    }
}

Pipeline::~Pipeline() {
    close();
}

void Pipeline::close() {
    {
        std::lock_guard<std::mutex> lock(control_mutex_);
        if (closed_) return;
        closed_ = true;
    }
    request_stop("stop");
    llm_jobs_.close();
    if (llm_thread_.joinable()) llm_thread_.join();
    if (speech_) speech_->close();        // after the LLM thread: it may still hand over a turn's end
    if (audio_out_) audio_out_->close();  // after the TTS thread, for the same reason
    sink_.reset();                        // delivers what is left
    speech_.reset();
    audio_out_.reset();
    token2wav_.reset();
    tts_.reset();
    llm_.reset();
}

void Pipeline::llm_thread_main() {
    while (auto job = llm_jobs_.pop()) {
        (*job)();
    }
}

template <typename F>
auto Pipeline::call_on_llm(F && fn) -> decltype(fn()) {
    using Result = decltype(fn());
    auto task = std::make_shared<std::packaged_task<Result()>>(std::forward<F>(fn));
    std::future<Result> result = task->get_future();
    if (!llm_jobs_.push([task] { (*task)(); })) {
        throw StateError("the engine is closed");
    }
    return result.get();
}

void Pipeline::resolve_special_tokens() {
    special_.tts_eos = llm_->find_token("<|tts_eos|>");
    special_.im_end = llm_->find_token("<|im_end|>");
    special_.endoftext = llm_->find_token("<|endoftext|>");
    if (special_.tts_eos < 0 || special_.im_end < 0) {
        throw ModelFileError(llm_->path() +
                             ": the vocabulary lacks <|tts_eos|> or <|im_end|> (not a MiniCPM-o 4.5 LLM?)");
    }
    for (const char * text : kSpeechForbidden) {
        const Token id = llm_->find_token(text);
        if (id >= 0) special_.speech_forbidden.push_back(id);
    }
    for (Token id = 0; id < llm_->n_vocab(); ++id) {
        if (id == special_.tts_eos || llm_->is_end_of_generation(id)) special_.end_of_generation.push_back(id);
    }
}

void Pipeline::require_not_dispatcher(const char * what) const {
    if (sink_ && sink_->on_dispatcher_thread()) {
        throw StateError(std::string(what) + " cannot be called from inside the event callback");
    }
}

PipelineState Pipeline::state() const {
    std::lock_guard<std::mutex> lock(control_mutex_);
    if (!has_session_) return PipelineState::no_session;
    return turn_active_ ? PipelineState::generating : PipelineState::idle;
}

void Pipeline::check_audio(const float * pcm, size_t n_samples, const char * what) const {
    if (!audio_) {
        throw StateError(std::string(what) +
                         " needs the audio encoder (audio/MiniCPM-o-4_5-audio-F16.gguf), which this model directory "
                         "does not have");
    }
    if (n_samples == 0) throw StateError(std::string(what) + " is empty");
    for (size_t i = 0; i < n_samples; ++i) {
        if (!std::isfinite(pcm[i])) {
            throw StateError(std::string(what) + " contains NaN or infinite samples (first at sample " +
                             std::to_string(i) + ")");
        }
    }
}

void Pipeline::start_session(const SessionOptions & options, EventCallback callback,
                             const std::vector<float> & ref_audio) {
    require_not_dispatcher("start_session");
    if (!ref_audio.empty()) check_audio(ref_audio.data(), ref_audio.size(), "the reference voice");
    Session session{options, parse_media_type(options.media_type), parse_language(options.language)};
    if (options.duplex) throw StateError("duplex mode is not available yet (this build supports simplex only)");
    validate(options.sampling);
    validate(options.tts_sampling);
    if (options.max_new_tokens < 1) throw StateError("max_new_tokens must be >= 1");
    if (options.max_preserved_context < 1) throw StateError("max_preserved_context must be >= 1");

    request_stop("stop");
    wait();
    {
        std::lock_guard<std::mutex> lock(control_mutex_);
        if (closed_) throw StateError("the engine is closed");
        has_session_ = false;
    }
    sink_.reset();
    sink_ = std::make_unique<EventSink>(
        std::move(callback), [this](const Event & e) { on_turn_ending(e); },
        [this](const Event & e) { on_delivered(e); });
    call_on_llm([&] {
        session_ = session;
        sampler_ = std::make_unique<Sampler>(options.sampling);
        prefill_system_prompt(ref_audio);
    });
    std::lock_guard<std::mutex> lock(control_mutex_);
    has_session_ = true;
}

void Pipeline::prefill_system_prompt(const std::vector<float> & ref_audio) {
    llm_->clear();
    context_.clear();
    round_starts_.clear();
    n_keep_ = 0;
    const SystemPrompt prompt = simplex_system_prompt(session_->media, session_->language);
    prefilling_system_ = true;
    try {
        if (ref_audio.empty()) {
            eval_text(prompt.text_only, true, nullptr);
        } else {
            const AudioRows voice = audio_->encode(ref_audio.data(), ref_audio.size());
            eval_text(prompt.prefix, true, nullptr);
            eval_rows(voice.data, voice.n_rows);
            eval_text(prompt.suffix, true, nullptr);
        }
    } catch (...) {
        prefilling_system_ = false;
        llm_->clear();
        context_.clear();
        throw;
    }
    prefilling_system_ = false;
    if (audio_) audio_->reset_stream();  // the PyTorch reference resets the encoder cache after the system prompt
    n_keep_ = llm_->n_past();
    open_round_start_ = llm_->n_past();
    pending_prefill_tokens_ = 0;
    pending_prefill_ms_ = 0.0;
}

int Pipeline::eval_text(const std::string & text, bool parse_special, std::vector<float> * logits) {
    return eval_tokens(llm_->tokenize(text, parse_special), logits);
}

int Pipeline::eval_tokens(const std::vector<Token> & tokens, std::vector<float> * logits) {
    ensure_room(static_cast<int>(tokens.size()));
    llm_->eval_tokens(tokens, logits);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
    n_past_ = llm_->n_past();
    return static_cast<int>(tokens.size());
}

void Pipeline::require_idle_session() {
    std::lock_guard<std::mutex> lock(control_mutex_);
    if (!has_session_) throw StateError("no session: call start_session first");
    if (turn_active_) throw BusyError("an answer is being generated; stop it or wait before adding input");
}

int Pipeline::eval_rows(const std::vector<float> & rows, int n_rows) {
    ensure_room(n_rows);
    llm_->eval_embeddings(rows.data(), n_rows);
    context_.insert(context_.end(), static_cast<size_t>(n_rows), -1);
    n_past_ = llm_->n_past();
    return n_rows;
}

int Pipeline::prefill_audio(const float * pcm, size_t n_samples) {
    check_audio(pcm, n_samples, "audio");
    require_idle_session();
    return call_on_llm([&] {
        const double t0 = now_ms();
        const AudioRows rows = audio_->encode_chunk(pcm, n_samples);
        const std::vector<Token> open = llm_->tokenize(kAudioStart, true);
        const std::vector<Token> close = llm_->tokenize(kAudioEnd, true);
        ensure_room(static_cast<int>(open.size() + close.size()) + rows.n_rows);
        int added = eval_tokens(open, nullptr);
        added += eval_rows(rows.data, rows.n_rows);
        added += eval_tokens(close, nullptr);
        pending_prefill_tokens_ += added;
        pending_prefill_ms_ += now_ms() - t0;
        return added;
    });
}

int Pipeline::prefill_image(const uint8_t * rgb, int width, int height, int max_slices) {
    if (!vision_) {
        throw StateError("image input needs the vision stage: no vision/MiniCPM-o-4_5-vision-F16.gguf in " +
                         options_.model_dir);
    }
    if (!rgb) throw std::invalid_argument("image is empty");
    require_idle_session();  // sizes and max_slices are checked by the slice plan, before anything is added
    return call_on_llm([&] {
        const double t0 = now_ms();
        const int added = eval_image(vision_->encode_image(rgb, ImageSize{width, height}, max_slices));
        pending_prefill_tokens_ += added;
        pending_prefill_ms_ += now_ms() - t0;
        return added;
    });
}

int Pipeline::eval_image(const EncodedImage & image) {
    const auto marker = [&](const char * text) { return llm_->tokenize(text, true); };
    const std::vector<Token> image_open = marker(kImageStart), image_close = marker(kImageEnd);
    const std::vector<Token> slice_open = marker(kSliceStart), slice_close = marker(kSliceEnd);
    const std::vector<Token> newline = llm_->tokenize("\n", false);
    const int n_rows = vision_->n_query();
    const int columns = image.plan.grid_columns;
    const int n_slices = image.plan.n_slices();
    const int n_newlines = n_slices > 0 ? image.plan.grid_rows - 1 : 0;
    ensure_room(static_cast<int>(image_open.size() + image_close.size()) + n_rows * (1 + n_slices) +
                n_slices * static_cast<int>(slice_open.size() + slice_close.size()) +
                n_newlines * static_cast<int>(newline.size()));
    int added = eval_tokens(image_open, nullptr);
    added += eval_rows(image.chunks.at(0), n_rows);
    added += eval_tokens(image_close, nullptr);
    for (int i = 0; i < n_slices; ++i) {
        if (i > 0 && i % columns == 0) added += eval_tokens(newline, nullptr);
        added += eval_tokens(slice_open, nullptr);
        added += eval_rows(image.chunks.at(static_cast<size_t>(i) + 1), n_rows);
        added += eval_tokens(slice_close, nullptr);
    }
    return added;
}

int Pipeline::prefill_text(const std::string & text) {
    if (text.empty()) throw StateError("text is empty");
    require_idle_session();
    return call_on_llm([&] {
        const double t0 = now_ms();
        // User text is never parsed for special tokens: typing "<|im_end|>" must not end the turn.
        const int added = eval_text(text, false, nullptr);
        pending_prefill_tokens_ += added;
        pending_prefill_ms_ += now_ms() - t0;
        return added;
    });
}

int Pipeline::generate(int max_new_tokens, float length_penalty) {
    int turn = 0;
    const double t_generate = now_ms();
    {
        std::lock_guard<std::mutex> lock(control_mutex_);
        if (!has_session_) throw StateError("no session: call start_session first");
        if (turn_active_) throw BusyError("an answer is already being generated");
        turn_active_ = true;
        turn = ++issued_turn_;
    }
    const bool queued = llm_jobs_.push([this, turn, max_new_tokens, length_penalty, t_generate] {
        run_turn(turn, max_new_tokens, length_penalty, t_generate);
    });
    if (!queued) {
        std::lock_guard<std::mutex> lock(control_mutex_);
        turn_active_ = false;
        delivered_turn_ = turn;
        throw StateError("the engine is closed");
    }
    return turn;
}

bool Pipeline::wait(double timeout_s) {
    std::unique_lock<std::mutex> lock(control_mutex_);
    if (delivered_turn_ < issued_turn_ && sink_ && sink_->on_dispatcher_thread()) {
        throw StateError("wait cannot be called from inside the event callback");
    }
    const auto idle = [&] { return delivered_turn_ >= issued_turn_; };
    if (timeout_s < 0) {
        idle_cv_.wait(lock, idle);
        return true;
    }
    return idle_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), idle);
}

void Pipeline::request_stop(const char * reason) {
    std::lock_guard<std::mutex> lock(control_mutex_);
    if (!turn_active_) return;
    stop_through_turn_ = issued_turn_;
    stop_reason_ = reason;
    if (abortable_) abort_eval_ = true;
}

void Pipeline::stop() {
    request_stop("stop");
}

void Pipeline::break_turn() {
    request_stop("break");
}

void Pipeline::reset() {
    require_not_dispatcher("reset");
    request_stop("stop");
    wait();
    {
        std::lock_guard<std::mutex> lock(control_mutex_);
        if (!has_session_) throw StateError("no session: call start_session first");
    }
    call_on_llm([&] {
        llm_->remove(n_keep_, llm_->n_past());
        context_.resize(static_cast<size_t>(n_keep_.load()));
        round_starts_.clear();
        open_round_start_ = n_keep_;
        if (audio_) audio_->reset_stream();
        pending_prefill_tokens_ = 0;
        pending_prefill_ms_ = 0.0;
        n_past_ = llm_->n_past();
    });
}

std::vector<Token> Pipeline::context_tokens() {
    require_not_dispatcher("context_tokens");
    return call_on_llm([&] { return context_; });
}

void Pipeline::ensure_room(int n_new) {
    const auto fits = [&] { return llm_->n_past() + n_new <= llm_->n_ctx(); };
    if (fits()) return;
    const std::string context = " (n_ctx " + std::to_string(llm_->n_ctx()) + ", system prompt " +
                                std::to_string(n_keep_.load()) + " tokens, " + std::to_string(llm_->n_past()) +
                                " in use)";
    if (prefilling_system_) {
        throw ContextFullError("the system prompt does not fit the context" + context +
                               ": use a shorter reference voice or a larger n_ctx");
    }
    // Input that cannot fit even in an empty conversation is refused without touching the history.
    if (n_keep_ + n_new > llm_->n_ctx()) {
        throw ContextFullError("the input of " + std::to_string(n_new) + " tokens does not fit the context" + context);
    }
    while (!fits()) {
        const int before = llm_->n_past();
        slide_window();
        if (llm_->n_past() == before) {
            throw ContextFullError("could not make room for " + std::to_string(n_new) + " tokens" + context);
        }
    }
}

void Pipeline::slide_window() {
    const DropSpan span = plan_slide(n_keep_, llm_->n_past(), round_starts_, open_round_start_,
                                     session_ ? session_->options.max_preserved_context : 2048);
    const int dropped = span.end - span.begin;
    if (dropped <= 0) return;
    llm_->remove(span.begin, span.end);
    context_.erase(context_.begin() + span.begin, context_.begin() + span.end);
    std::vector<int> kept;
    for (int start : round_starts_) {
        if (start >= span.end) kept.push_back(start - dropped);
    }
    round_starts_ = kept;
    open_round_start_ =
        open_round_start_ >= span.end ? open_round_start_ - dropped : std::max(span.begin, n_keep_.load());
    n_past_ = llm_->n_past();
    log_message(LogLevel::info, "context window: dropped " + std::to_string(dropped) + " tokens of old conversation");
}

void Pipeline::emit(Event event) {
    if (sink_) sink_->push(std::move(event));
}

// The turn accepts new input before its end_of_turn reaches the callback, so a client reacting to it can
// prefill at once; wait() still returns only after the callback has seen it.
void Pipeline::on_turn_ending(const Event & event) {
    if (event.type != EventType::end_of_turn) return;
    std::lock_guard<std::mutex> lock(control_mutex_);
    if (event.turn == issued_turn_) turn_active_ = false;
}

void Pipeline::on_delivered(const Event & event) {
    if (event.type != EventType::end_of_turn) return;
    std::lock_guard<std::mutex> lock(control_mutex_);
    delivered_turn_ = std::max(delivered_turn_, event.turn);
    idle_cv_.notify_all();
}

void Pipeline::run_turn(int turn, int max_new_tokens, float length_penalty, double t_generate) {
    // Each answer starts a new audio stream: the next user clip is encoded from position 0 (PyTorch reference).
    if (audio_) audio_->reset_stream();
    TurnStats stats;
    std::string reason;
    {
        std::lock_guard<std::mutex> lock(control_mutex_);
        abortable_ = true;
        abort_eval_ = stop_through_turn_ >= turn;
    }
    const bool speaking = speech_ && session_->options.speak;
    std::unique_ptr<SpeechChunkBuilder> speech;
    if (speaking) {
        speech = std::make_unique<SpeechChunkBuilder>(turn, llm_->n_embd(), session_->options.tts_sampling, t_generate);
    }
    try {
        reason = generate_tokens(turn, max_new_tokens, length_penalty, stats, t_generate, speech.get());
    } catch (const ContextFullError & e) {
        reason = "context_full";
        emit(error_event(turn, e.what()));
    } catch (const std::exception & e) {
        if (std::string(e.what()) == "aborted") {
            std::lock_guard<std::mutex> lock(control_mutex_);
            reason = stop_reason_;
        } else {
            reason = "error";
            emit(error_event(turn, e.what()));
        }
    }
    {
        std::lock_guard<std::mutex> lock(control_mutex_);
        abortable_ = false;
        abort_eval_ = false;
    }
    try {
        close_turn();
    } catch (const std::exception & e) {
        emit(error_event(turn, std::string("could not close the turn: ") + e.what()));
        reason = "error";
    }
    if (speech && hand_turn_end_to_speech(*speech, reason, stats)) return;
    stats.total_ms = now_ms() - t_generate;
    emit(stats_event(turn, stats));
    emit(end_of_turn_event(turn, reason));
}

// The last (possibly empty) text chunk goes to the TTS thread together with the turn's end, which that thread
// emits after the speech. False if the thread is gone (the engine is closing).
bool Pipeline::hand_turn_end_to_speech(SpeechChunkBuilder & speech, const std::string & reason,
                                       const TurnStats & stats) {
    SpeechJob job = speech.take(true);
    job.end = true;
    job.reason = reason;
    job.stats = stats;
    return speech_->push(std::move(job));
}

std::string Pipeline::generate_tokens(int turn, int max_new_tokens, float length_penalty, TurnStats & stats,
                                      double t_generate, SpeechChunkBuilder * speech) {
    const SessionOptions & opts = session_->options;
    const int limit = max_new_tokens > 0 ? max_new_tokens : opts.max_new_tokens;
    SamplingParams params = opts.sampling;
    if (length_penalty > 0.0f) params.length_penalty = length_penalty;
    validate(params);
    Sampler turn_sampler(params);
    Sampler & sampler = length_penalty > 0.0f ? turn_sampler : *sampler_;

    const std::vector<Token> terminators{special_.tts_eos, special_.im_end, special_.endoftext};
    const std::vector<Token> no_tokens;
    std::vector<Token> forbidden = opts.speak ? special_.speech_forbidden : no_tokens;
    if (opts.ignore_eos)
        forbidden.insert(forbidden.end(), special_.end_of_generation.begin(), special_.end_of_generation.end());

    std::vector<float> logits;
    std::vector<float> hidden;
    const double t_header = now_ms();
    stats.prefill_tokens = pending_prefill_tokens_ + eval_text(assistant_header(opts.speak), true, &logits);
    stats.prefill_ms = pending_prefill_ms_ + (now_ms() - t_header);
    pending_prefill_tokens_ = 0;
    pending_prefill_ms_ = 0.0;

    std::vector<Token> history;
    Utf8Accumulator text;
    const double t_decode = now_ms();
    std::string reason = "max_tokens";
    for (int i = 0; i < limit; ++i) {
        if (stop_through_turn_ >= turn) {
            std::lock_guard<std::mutex> lock(control_mutex_);
            reason = stop_reason_;
            break;
        }
        const Token token = sampler.sample(logits, history, terminators, forbidden);
        if (token == special_.tts_eos || llm_->is_end_of_generation(token)) {
            reason = "eos";
            break;
        }
        history.push_back(token);
        const std::string piece = llm_->is_control(token) ? "" : text.push(llm_->token_piece(token));
        if (!piece.empty()) {
            if (stats.ttft_ms < 0) stats.ttft_ms = now_ms() - t_generate;
            emit(text_event(turn, piece));
        }
        ensure_room(1);
        llm_->step(token, logits, hidden);
        context_.push_back(token);
        n_past_ = llm_->n_past();
        ++stats.decode_tokens;
        if (speech) {
            speech->add(token, hidden, piece);
            if (speech->full()) {
                speech_->push(speech->take(false));  // waits while the TTS is one chunk behind
            }
        }
    }
    const std::string rest = text.flush();
    if (!rest.empty()) emit(text_event(turn, rest));
    if (speech) speech->add_text(rest);
    stats.decode_ms = now_ms() - t_decode;
    return reason;
}

void Pipeline::close_turn() {
    eval_text(turn_close(session_->options.speak), true, nullptr);
    round_starts_.push_back(open_round_start_);
    open_round_start_ = llm_->n_past();
    // Make room for the next turn early, as the reference does after every answer.
    const int margin = std::min(1024, llm_->n_ctx() / 4);
    if (llm_->n_past() > llm_->n_ctx() - margin) slide_window();
}

}  // namespace omni

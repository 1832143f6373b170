#include "pipeline/audio_worker.h"

#include <algorithm>

namespace omni {

std::vector<int16_t> to_pcm16(const std::vector<float> & pcm) {
    std::vector<int16_t> out(pcm.size());
    for (size_t i = 0; i < pcm.size(); ++i) {
        out[i] = static_cast<int16_t>(std::clamp(pcm[i], -1.0f, 1.0f) * 32767.0f);
    }
    return out;
}

AudioWorker::AudioWorker(Token2Wav & token2wav, Emit emit, Stopped stopped, double (*clock_ms)())
    : token2wav_(token2wav), emit_(std::move(emit)), stopped_(std::move(stopped)), clock_ms_(clock_ms) {}

AudioWorker::~AudioWorker() {
    close();
}

void AudioWorker::close() {
    groups_.close();
}

bool AudioWorker::push(SpeechGroup group) {
    return groups_.push(std::move(group));
}

void AudioWorker::process(SpeechGroup & group) {
    if (group.turn != turn_.id) {  // a new turn is a new stream, whatever the last one left behind
        token2wav_.reset();
        turn_ = Turn{};
        turn_.id = group.turn;
    }
    if (!turn_.failed && !stopped_(group.turn)) synthesize(group);
    if (group.end) finish_turn(group);
}

// One window at a time, so a stop cuts the stream after the window in progress.
void AudioWorker::synthesize(SpeechGroup & group) {
    try {
        token2wav_.append(group.codes);
        std::vector<float> pcm;
        const int window = token2wav_.window_tokens();
        while (!stopped_(group.turn)) {
            const double t0 = clock_ms_();
            pcm.clear();
            if (!token2wav_.step(pcm)) break;
            turn_.compute_ms += clock_ms_() - t0;
            if (!stopped_(group.turn)) emit_pcm(pcm, window, group.t_generate);
        }
        if (group.final && !stopped_(group.turn)) {
            const int rest = token2wav_.buffered();
            const double t0 = clock_ms_();
            pcm = token2wav_.finish();
            turn_.compute_ms += clock_ms_() - t0;
            if (!stopped_(group.turn)) emit_pcm(pcm, rest, group.t_generate);
        }
    } catch (const std::exception & e) {
        turn_.failed = true;
        emit_(error_event(group.turn, std::string("speech decoding failed: ") + e.what()));
    }
}

void AudioWorker::emit_pcm(const std::vector<float> & pcm, int n_input_tokens, double t_generate) {
    if (pcm.empty()) return;
    if (turn_.first_audio_ms < 0) turn_.first_audio_ms = clock_ms_() - t_generate;
    turn_.samples += static_cast<int>(pcm.size());
    Event e;
    e.type = EventType::audio;
    e.turn = turn_.id;
    e.pcm = to_pcm16(pcm);
    e.n_input_tokens = n_input_tokens;
    emit_(std::move(e));
}

void AudioWorker::finish_turn(SpeechGroup & group) {
    token2wav_.reset();
    TurnStats stats = group.stats;
    stats.audio_samples = turn_.samples;
    stats.token2wav_ms = turn_.compute_ms;
    stats.first_audio_ms = turn_.first_audio_ms;
    stats.total_ms = clock_ms_() - group.t_generate;
    const bool ended_normally = group.reason == "eos" || group.reason == "max_tokens";
    emit_(stats_event(group.turn, stats));
    emit_(end_of_turn_event(group.turn, turn_.failed && ended_normally ? "error" : group.reason));
    turn_ = Turn{};
}

}  // namespace omni

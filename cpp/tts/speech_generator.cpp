#include "tts/speech_generator.h"

#include <algorithm>

#include "core/errors.h"
#include "core/log.h"

namespace omni {

bool is_tts_valid(int token) {
    static constexpr int kExcluded[] = {151667, 151668, 151704, 151705, 151706, 151717, 151718, 151721, 271};
    return token >= 0 && token < 150000 &&
           std::find(std::begin(kExcluded), std::end(kExcluded), token) == std::end(kExcluded);
}

SpeechTokenGrouper::SpeechTokenGrouper(int group_size) : group_size_(group_size) {
    if (group_size_ < 1) throw StateError("speech group size must be >= 1");
}

std::vector<std::vector<int>> SpeechTokenGrouper::push(const std::vector<int> & codes) {
    pending_.insert(pending_.end(), codes.begin(), codes.end());
    std::vector<std::vector<int>> groups;
    size_t used = 0;
    while (pending_.size() - used >= static_cast<size_t>(group_size_)) {
        groups.emplace_back(pending_.begin() + static_cast<long>(used),
                            pending_.begin() + static_cast<long>(used + group_size_));
        used += group_size_;
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(used));
    return groups;
}

std::vector<int> SpeechTokenGrouper::flush() {
    std::vector<int> rest;
    rest.swap(pending_);
    return rest;
}

SpeechGenerator::SpeechGenerator(Tts & tts, const TtsSamplingParams & params) : tts_(tts), sampler_(params) {}

void SpeechGenerator::start_turn() {
    tts_.clear();
    history_.clear();
    first_ = true;
}

// [emb_text[id] + normalised projection] per token, then text-EOS on the last chunk, then audio-BOS (PyTorch
// order; the C++ reference only adds text-EOS after a first speech EOS).
std::vector<float> SpeechGenerator::condition_rows(const std::vector<int> & ids, const float * hidden, bool last) {
    std::vector<float> rows = tts_.condition(ids, hidden);
    const auto append = [&](int id) {
        const float * row = tts_.text_row(id);
        rows.insert(rows.end(), row, row + tts_.n_embd());
    };
    if (last) append(kTtsTextEos);
    append(kTtsAudioBos);
    return rows;
}

std::vector<int> SpeechGenerator::speak_chunk(const std::vector<int> & ids, const float * hidden, bool last,
                                              const std::function<bool()> & cancelled) {
    const std::vector<float> rows = condition_rows(ids, hidden, last);
    const int n_rows = static_cast<int>(rows.size()) / tts_.n_embd();
    const int max_codes = sampler_.params().max_tokens_per_chunk;
    if (n_rows + max_codes > tts_.n_ctx()) {
        throw StateError("the TTS context (" + std::to_string(tts_.n_ctx()) + " positions) cannot hold one chunk");
    }
    if (tts_.n_past() + n_rows + max_codes > tts_.n_ctx()) {
        // A very long answer: continue in a fresh context rather than overflow it.
        log_message(LogLevel::info, "TTS context full after " + std::to_string(tts_.n_past()) +
                                        " positions: the rest of the answer starts a new one");
        tts_.clear();
    }
    std::vector<float> logits = tts_.forward(rows.data(), n_rows);
    std::vector<int> codes;
    while (static_cast<int>(codes.size()) < max_codes) {
        if (cancelled && cancelled()) break;
        const int code = sampler_.sample(logits, history_, first_);
        first_ = false;
        if (code == tts_.eos_code()) break;
        codes.push_back(code);
        history_.push_back(code);
        logits = tts_.forward(tts_.code_row(code), 1);
    }
    return codes;
}

}  // namespace omni

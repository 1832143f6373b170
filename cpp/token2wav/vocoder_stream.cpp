#include "token2wav/vocoder_stream.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace omni {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<double> hamming(int n) {
    std::vector<double> window(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) window[i] = 0.54 - 0.46 * std::cos(2.0 * kPi * i / (n - 1));
    return window;
}

std::vector<float> tail(const std::vector<float> & values, size_t n) {
    return std::vector<float>(values.end() - static_cast<std::ptrdiff_t>(std::min(n, values.size())), values.end());
}

}  // namespace

VocoderStream::VocoderStream(HiftVocoder & vocoder) : vocoder_(vocoder), window_(hamming(2 * kOverlap)) {}

void VocoderStream::reset() {
    mel_cache_.clear();
    cached_frames_ = 0;
    source_cache_.clear();
    speech_cache_.clear();
}

std::vector<float> VocoderStream::join_mel(const std::vector<float> & mel, int n_frames) const {
    const int total = cached_frames_ + n_frames;
    std::vector<float> joined(static_cast<size_t>(HiftVocoder::kMels) * total);
    for (int c = 0; c < HiftVocoder::kMels; ++c) {
        float * row = &joined[static_cast<size_t>(c) * total];
        std::copy_n(&mel_cache_[static_cast<size_t>(c) * cached_frames_], cached_frames_, row);
        std::copy_n(mel.data() + static_cast<size_t>(c) * n_frames, n_frames, row + cached_frames_);
    }
    return joined;
}

// The previous call's held-back tail fades out while this call's head fades in (float64 like the reference).
void VocoderStream::cross_fade(std::vector<float> & speech) const {
    const size_t n = speech_cache_.size();
    for (size_t i = 0; i < n; ++i) {
        speech[i] = static_cast<float>(speech[i] * window_[i] + speech_cache_[i] * window_[kOverlap + i]);
    }
}

void VocoderStream::keep_tails(const std::vector<float> & mel_in, int n_frames_in, const std::vector<float> & source,
                               const std::vector<float> & speech) {
    const int kept = std::min(kCachedFrames, n_frames_in);
    std::vector<float> cache(static_cast<size_t>(HiftVocoder::kMels) * kept);
    for (int c = 0; c < HiftVocoder::kMels; ++c) {
        std::copy_n(&mel_in[static_cast<size_t>(c) * n_frames_in + (n_frames_in - kept)], kept,
                    &cache[static_cast<size_t>(c) * kept]);
    }
    mel_cache_ = std::move(cache);
    cached_frames_ = kept;
    source_cache_ = tail(source, kOverlap);
    speech_cache_ = tail(speech, kOverlap);
}

std::vector<float> VocoderStream::feed(const std::vector<float> & mel, int n_frames, bool final) {
    if (n_frames < 0 || mel.size() != static_cast<size_t>(HiftVocoder::kMels) * n_frames) {
        throw std::invalid_argument("mel must hold 80 x n_frames values (got " + std::to_string(mel.size()) +
                                    " values for " + std::to_string(n_frames) + " frames)");
    }
    const int total = cached_frames_ + n_frames;
    if (!final && (n_frames < 1 || total < kCachedFrames)) {
        throw std::invalid_argument("mel: a non-final chunk needs at least 1 frame and " +
                                    std::to_string(kCachedFrames) + " frames with the cached ones (got " +
                                    std::to_string(n_frames) + " + " + std::to_string(cached_frames_) + ")");
    }
    if (total == 0) return {};
    const std::vector<float> mel_in = join_mel(mel, n_frames);
    std::vector<float> source;
    std::vector<float> speech = vocoder_.synthesize(mel_in, total, source_cache_, &source);
    if (!speech_cache_.empty()) cross_fade(speech);
    if (final) {
        reset();
        return speech;
    }
    keep_tails(mel_in, total, source, speech);
    speech.resize(speech.size() - kOverlap);
    return speech;
}

}  // namespace omni

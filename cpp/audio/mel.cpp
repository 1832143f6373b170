#include "audio/mel.h"

#include <algorithm>
#include <cmath>

#include "core/errors.h"

namespace omni {

MelFrontend::MelFrontend(std::vector<float> filters, int n_mel) : filters_(std::move(filters)), n_mel_(n_mel) {
    if (n_mel_ <= 0 || filters_.size() != static_cast<size_t>(n_mel_) * kBins) {
        throw ModelFileError("mel filters must hold n_mel x 201 values, got " + std::to_string(filters_.size()));
    }
    const double pi = std::acos(-1.0);
    window_.resize(kFftSize);
    for (int n = 0; n < kFftSize; ++n) window_[n] = 0.5 - 0.5 * std::cos(2.0 * pi * n / kFftSize);  // periodic Hann
    cos_table_.resize(static_cast<size_t>(kBins) * kFftSize);
    sin_table_.resize(static_cast<size_t>(kBins) * kFftSize);
    for (int k = 0; k < kBins; ++k) {
        for (int n = 0; n < kFftSize; ++n) {
            const double angle = 2.0 * pi * ((static_cast<long>(k) * n) % kFftSize) / kFftSize;
            cos_table_[static_cast<size_t>(k) * kFftSize + n] = std::cos(angle);
            sin_table_[static_cast<size_t>(k) * kFftSize + n] = std::sin(angle);
        }
    }
}

std::vector<float> MelFrontend::compute(const float * pcm, size_t n_samples, int * n_frames) const {
    // Zero-pad at the end to a multiple of 100 ms (at least 100 ms).
    const size_t padded = std::max<size_t>(kPadUnit, (n_samples + kPadUnit - 1) / kPadUnit * kPadUnit);
    const int half = kFftSize / 2;
    // Centre the frames: reflect at the start, zeros at the end.
    std::vector<double> signal(padded + kFftSize, 0.0);
    for (size_t i = 0; i < n_samples; ++i) signal[half + i] = pcm[i];
    for (int j = 0; j < half; ++j) signal[j] = signal[2 * half - j];
    const int frames = static_cast<int>(padded / kHop);  // the last frame is dropped, as in Whisper

    std::vector<double> power(kBins);
    std::vector<double> frame(kFftSize);
    std::vector<double> mel(static_cast<size_t>(n_mel_) * frames);
    for (int t = 0; t < frames; ++t) {
        const double * start = signal.data() + static_cast<size_t>(t) * kHop;
        for (int n = 0; n < kFftSize; ++n) frame[n] = start[n] * window_[n];
        for (int k = 0; k < kBins; ++k) {
            const double * c = cos_table_.data() + static_cast<size_t>(k) * kFftSize;
            const double * s = sin_table_.data() + static_cast<size_t>(k) * kFftSize;
            double re = 0.0;
            double im = 0.0;
            for (int n = 0; n < kFftSize; ++n) {
                re += frame[n] * c[n];
                im -= frame[n] * s[n];
            }
            power[k] = re * re + im * im;
        }
        for (int m = 0; m < n_mel_; ++m) {
            const float * f = filters_.data() + static_cast<size_t>(m) * kBins;
            double sum = 0.0;
            for (int k = 0; k < kBins; ++k) sum += f[k] * power[k];
            mel[static_cast<size_t>(m) * frames + t] = std::log10(std::max(sum, 1e-10));
        }
    }
    const double top = *std::max_element(mel.begin(), mel.end());
    std::vector<float> out(mel.size());
    for (size_t i = 0; i < mel.size(); ++i) out[i] = static_cast<float>((std::max(mel[i], top - 8.0) + 4.0) / 4.0);
    *n_frames = frames;
    return out;
}

}  // namespace omni

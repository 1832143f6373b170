// The log-mel frontend of the audio encoder (pipeline.md §4.1 steps 2-5): 16 kHz PCM in, 80 x frames out.
#pragma once

#include <cstddef>
#include <vector>

namespace omni {

class MelFrontend {
public:
    static constexpr int kSampleRate = 16000;
    static constexpr int kFftSize = 400;
    static constexpr int kHop = 160;
    static constexpr int kBins = kFftSize / 2 + 1;  // 201
    static constexpr int kPadUnit = 1600;           // 100 ms

    // filters: n_mel x 201, row-major [mel][bin] (the audio file's `filters` key).
    MelFrontend(std::vector<float> filters, int n_mel);

    int n_mel() const { return n_mel_; }
    // Normalised log-mel, row-major [mel][frame]; sets *n_frames. Pads the input as the reference does.
    std::vector<float> compute(const float * pcm, size_t n_samples, int * n_frames) const;

private:
    std::vector<float> filters_;
    int n_mel_;
    std::vector<double> window_;
    std::vector<double> cos_table_;  // [bin][n]
    std::vector<double> sin_table_;
};

}  // namespace omni

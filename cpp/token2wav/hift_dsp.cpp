#include "token2wav/hift_dsp.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace omni {
namespace hift {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr float kSineAmplitude = 0.1f;
constexpr float kVoicedNoise = 0.003f;
constexpr float kUnvoicedNoise = static_cast<float>(0.1 / 3);
constexpr float kVoicedThresholdHz = 10.0f;

// For output phase r of a transposed convolution: the weight taps k and input offsets that feed it.
template <typename Visit>
void for_each_tap(int kernel, int stride, int padding, int r, Visit visit) {
    const int shifted = r + padding;
    const int first = shifted % stride;
    for (int k = first; k < kernel; k += stride) visit(k, shifted / stride - (k - first) / stride);
}

// The input frame of output sample n for PyTorch's nearest up-sampling by kSamplesPerFrame (float32 scale).
int64_t nearest_frame(int64_t n, int64_t n_frames, float ratio) {
    return std::min(static_cast<int64_t>(std::floor(static_cast<float>(n) * ratio)), n_frames - 1);
}

}  // namespace

std::vector<float> pad_inputs(const std::vector<float> & weight, int n_out, int n_in, int kernel, int in_rows) {
    std::vector<float> padded(static_cast<size_t>(n_out) * in_rows * kernel, 0.0f);
    for (int o = 0; o < n_out; ++o) {
        std::copy_n(&weight[static_cast<size_t>(o) * n_in * kernel], static_cast<size_t>(n_in) * kernel,
                    &padded[static_cast<size_t>(o) * in_rows * kernel]);
    }
    return padded;
}

std::vector<float> select_rows(const std::vector<float> & weight, size_t row_size, const std::vector<int> & out_map) {
    std::vector<float> rows(row_size * out_map.size(), 0.0f);
    for (size_t r = 0; r < out_map.size(); ++r) {
        if (out_map[r] >= 0) std::copy_n(&weight[out_map[r] * row_size], row_size, &rows[r * row_size]);
    }
    return rows;
}

PolyphaseKernel polyphase_kernel(const std::vector<float> & weight, int n_in, int n_out, int kernel, int stride,
                                 int padding) {
    if (kernel - 2 * padding > stride || padding < 0 || stride <= 0) {
        throw std::invalid_argument("polyphase_kernel: kernel " + std::to_string(kernel) + ", stride " +
                                    std::to_string(stride) + ", padding " + std::to_string(padding) +
                                    " produce more than stride samples per input");
    }
    PolyphaseKernel p;
    for (int r = 0; r < stride; ++r) {
        for_each_tap(kernel, stride, padding, r, [&](int, int offset) { p.half = std::max(p.half, std::abs(offset)); });
    }
    p.taps = 2 * p.half + 1;
    p.weight.assign(static_cast<size_t>(stride) * n_out * n_in * p.taps, 0.0f);
    for (int r = 0; r < stride; ++r) {
        for_each_tap(kernel, stride, padding, r, [&](int k, int offset) {
            for (int oc = 0; oc < n_out; ++oc) {
                const size_t row = static_cast<size_t>(oc) + static_cast<size_t>(n_out) * r;
                for (int ic = 0; ic < n_in; ++ic) {
                    p.weight[(row * n_in + ic) * p.taps + offset + p.half] =
                        weight[(static_cast<size_t>(ic) * n_out + oc) * kernel + k];
                }
            }
        });
    }
    return p;
}

std::vector<float> hann_window() {
    std::vector<float> window(kNfft);
    for (int n = 0; n < kNfft; ++n) window[n] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * kPi * n / kNfft));
    return window;
}

std::vector<float> stft_matrix(int out_rows) {
    const std::vector<float> window = hann_window();
    std::vector<float> matrix(static_cast<size_t>(kNfft) * out_rows, 0.0f);
    for (int bin = 0; bin < kBins; ++bin) {
        for (int n = 0; n < kNfft; ++n) {
            const double angle = 2.0 * kPi * bin * n / kNfft;
            matrix[n + kNfft * bin] = static_cast<float>(window[n] * std::cos(angle));
            matrix[n + kNfft * (kBins + bin)] = static_cast<float>(-window[n] * std::sin(angle));
        }
    }
    return matrix;
}

std::vector<float> istft_weight() {
    const std::vector<float> window = hann_window();
    std::vector<float> weight(static_cast<size_t>(kSpectrumChannels) * kNfft);
    for (int bin = 0; bin < kBins; ++bin) {
        const bool edge = bin == 0 || bin == kBins - 1;  // DC and Nyquist: counted once, imaginary part ignored
        for (int n = 0; n < kNfft; ++n) {
            const double angle = 2.0 * kPi * bin * n / kNfft;
            const double scale = window[n] / static_cast<double>(kNfft) * (edge ? 1.0 : 2.0);
            weight[bin * kNfft + n] = static_cast<float>(scale * std::cos(angle));
            weight[(kBins + bin) * kNfft + n] = edge ? 0.0f : static_cast<float>(-scale * std::sin(angle));
        }
    }
    return weight;
}

std::vector<float> istft_envelope(int n_spectrum_frames) {
    const std::vector<float> window = hann_window();
    const int n_samples = (n_spectrum_frames - 1) * kHop;
    std::vector<float> envelope(static_cast<size_t>(std::max(n_samples, 0)), 0.0f);
    for (int i = 0; i < n_samples; ++i) {
        const int m = i + kNfft / 2;  // position in the uncropped overlap-add
        const int first = std::max(0, (m - kNfft + kHop) / kHop);
        for (int f = first; f <= m / kHop && f < n_spectrum_frames; ++f) {
            const float w = window[m - f * kHop];
            envelope[i] += w * w;
        }
    }
    return envelope;
}

ExcitationSource::ExcitationSource(std::vector<float> merge_weight, float merge_bias, bool add_noise,
                                   uint64_t noise_seed)
    : merge_weight_(std::move(merge_weight)),
      merge_bias_(merge_bias),
      add_noise_(add_noise),
      noise_seed_(noise_seed),
      rng_(noise_seed) {
    double norm = 0.0;
    for (float w : merge_weight_) norm += static_cast<double>(w) * w;
    noise_scale_ = static_cast<float>(std::sqrt(norm));
}

std::vector<float> ExcitationSource::frame_phases(const std::vector<float> & f0) const {
    const int n_frames = static_cast<int>(f0.size());
    const int n_harm = n_harmonics();
    std::vector<float> phases(static_cast<size_t>(n_frames) * n_harm);
    for (int h = 0; h < n_harm; ++h) {
        double cumulative = 0.0;  // torch's CPU cumsum accumulates float32 in double
        for (int t = 0; t < n_frames; ++t) {
            const float cycles = f0[t] * static_cast<float>(h + 1) / static_cast<float>(kSampleRate);
            cumulative += cycles - std::floor(cycles);
            const float phase = static_cast<float>(cumulative) * 2.0f * static_cast<float>(kPi);
            phases[static_cast<size_t>(t) * n_harm + h] = phase * static_cast<float>(kSamplesPerFrame);
        }
    }
    return phases;
}

float ExcitationSource::gaussian() {
    const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2));
}

std::vector<float> ExcitationSource::generate(const std::vector<float> & f0) {
    const int64_t n_frames = static_cast<int64_t>(f0.size());
    const int64_t n_samples = n_frames * kSamplesPerFrame;
    const int n_harm = n_harmonics();
    const std::vector<float> phases = frame_phases(f0);
    const float ratio = static_cast<float>(1.0 / kSamplesPerFrame);
    std::vector<float> source(static_cast<size_t>(n_samples));
    for (int64_t n = 0; n < n_samples; ++n) {
        // Linear up-sampling of the frame phases, align_corners off, ends clamped (PyTorch's float32 indexing).
        const float position = std::max(ratio * (static_cast<float>(n) + 0.5f) - 0.5f, 0.0f);
        const int64_t i0 = std::min(static_cast<int64_t>(std::floor(position)), n_frames - 1);
        const int64_t i1 = i0 + (i0 < n_frames - 1 ? 1 : 0);
        const float lambda1 = std::min(std::max(position - static_cast<float>(i0), 0.0f), 1.0f);
        const float lambda0 = 1.0f - lambda1;
        const bool voiced = f0[nearest_frame(n, n_frames, ratio)] > kVoicedThresholdHz;
        float merged = 0.0f;
        if (voiced) {
            const float * p0 = &phases[static_cast<size_t>(i0) * n_harm];
            const float * p1 = &phases[static_cast<size_t>(i1) * n_harm];
            for (int h = 0; h < n_harm; ++h) {
                merged += merge_weight_[h] * (std::sin(p0[h] * lambda0 + p1[h] * lambda1) * kSineAmplitude);
            }
        }
        if (add_noise_) merged += (voiced ? kVoicedNoise : kUnvoicedNoise) * noise_scale_ * gaussian();
        source[n] = std::tanh(merged + merge_bias_);
    }
    return source;
}

}  // namespace hift
}  // namespace omni

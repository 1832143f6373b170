// Host-side signal processing of the HiFT vocoder (token2wav.md §3.7): the harmonic excitation (NSF source),
// the STFT / iSTFT bases and the polyphase form of transposed convolutions. The excitation's float32 arithmetic
// follows the PyTorch reference operation by operation, because its phases reach ~1e4 rad, where a different
// rounding of one step already moves a sine by ~1e-3.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace omni {
namespace hift {

constexpr int kSampleRate = 24000;
constexpr int kSamplesPerFrame = 480;
constexpr int kNfft = 16;
constexpr int kHop = 4;
constexpr int kBins = kNfft / 2 + 1;
constexpr int kSpectrumChannels = 2 * kBins;  // real parts, then imaginary parts

// Weights below are PyTorch Conv1d weights (out, in, kernel), row-major: ggml ne [kernel, in, out], which is
// also the matrix layout ([kernel * in, out]) of an input unfolded by ggml_im2col.

// The weight with its input channels padded with zeros to `in_rows` (ggml's fast CPU GEMM wants the unfolded
// length in * kernel to be a multiple of 16).
std::vector<float> pad_inputs(const std::vector<float> & weight, int n_out, int n_in, int kernel, int in_rows);
// The weight with output rows rearranged: row r of the result is row out_map[r] of `weight` (-1: zeros), each
// row_size values (ggml's fast CPU GEMM wants the output count to be a multiple of 4).
std::vector<float> select_rows(const std::vector<float> & weight, size_t row_size, const std::vector<int> & out_map);

// A transposed 1-D convolution (PyTorch ConvTranspose1d: weight (in, out, kernel), stride, padding) rewritten as
// an ordinary stride-1 Conv1d over the input with 2 * half + 1 taps (input offsets -half..half) and stride * out
// output channels: channel o + out * r at input position q is output sample q * stride + r of channel o, so
// with channels fastest the result [stride * out, n] is the output [out, stride * n] as it stands.
struct PolyphaseKernel {
    std::vector<float> weight;  // Conv1d weight (stride * out, in, taps)
    int taps = 0;
    int half = 0;
};

// `weight` is row-major (in, out, kernel). Requires kernel - 2 * padding <= stride, so that `stride` samples per
// input position cover the whole output ((n - 1) * stride + kernel - 2 * padding samples for n inputs).
PolyphaseKernel polyphase_kernel(const std::vector<float> & weight, int n_in, int n_out, int kernel, int stride,
                                 int padding);

// Periodic Hann window of kNfft samples (scipy get_window("hann", n, fftbins=True)), rounded to float32.
std::vector<float> hann_window();
// The windowed DFT as the matrix of kNfft-sample frames (hop kHop) of the reflect-padded signal, ne [kNfft,
// out_rows]: torch.stft's real parts in rows 0..8, imaginary parts in 9..17, zero rows after.
std::vector<float> stft_matrix(int out_rows);
// The windowed inverse real DFT of one frame as a ConvTranspose1d weight (kSpectrumChannels, 1, kNfft); like
// irfft it ignores the imaginary parts of the DC and Nyquist bins.
std::vector<float> istft_weight();
// torch.istft's window-square envelope for each kept output sample of `n_spectrum_frames` centred frames.
std::vector<float> istft_envelope(int n_spectrum_frames);

// The excitation of SourceModuleHnNSF2 / SineGen2: sines of the F0 harmonics (F0 in Hz per mel frame, 480
// samples each), voiced/unvoiced gating, optional Gaussian noise, merged by Linear(harmonics -> 1) and tanh.
class ExcitationSource {
public:
    ExcitationSource(std::vector<float> merge_weight, float merge_bias, bool add_noise, uint64_t noise_seed);

    int n_harmonics() const { return static_cast<int>(merge_weight_.size()); }
    std::vector<float> generate(const std::vector<float> & f0);
    // Back to the seed's first noise draw (each stream of a Token2Wav starts here).
    void restart_noise() { rng_.seed(noise_seed_); }

private:
    // Per frame and harmonic: the phase (radians) times the samples per frame, as the reference's up-sampler sees it.
    std::vector<float> frame_phases(const std::vector<float> & f0) const;
    float gaussian();

    std::vector<float> merge_weight_;
    float merge_bias_ = 0.0f;
    float noise_scale_ = 0.0f;  // the merged noise of all harmonics is one Gaussian scaled by ||merge_weight||
    bool add_noise_ = true;
    uint64_t noise_seed_ = 0;
    std::mt19937_64 rng_;
};

}  // namespace hift
}  // namespace omni

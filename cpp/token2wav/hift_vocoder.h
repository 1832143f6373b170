// The non-causal HiFT vocoder (token2wav.md §3.7, "vocoder A"): 80-band log-mel at 50 Hz -> 24 kHz PCM.
// Graph 1: F0 predictor (mel -> Hz per frame). Host: the harmonic excitation (hift_dsp.h). Graph 2: STFT of the
// excitation, conv_pre, three transposed-convolution upsamplers fused with the down-sampled excitation spectrum,
// Snake resblocks, conv_post, magnitude/phase and the iSTFT. Channel counts and kernels come from the tensor
// shapes of hifigan2.gguf; the upsample rates (8, 5, 3), the iSTFT (n_fft 16, hop 4) and the resblock dilations
// (1, 3, 5) are fixed and checked against the weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "token2wav/hift_dsp.h"

struct ggml_backend;
struct ggml_backend_buffer;
struct ggml_cgraph;
struct ggml_context;
struct ggml_tensor;

namespace omni {

class GraphRunner;
class WeightFile;

struct HiftOptions {
    bool add_noise = true;  // the reference's NSF noise (fresh N(0,1) per call); false for parity tests
    uint64_t noise_seed = 0;
};

class HiftVocoder {
public:
    static constexpr int kSampleRate = hift::kSampleRate;
    static constexpr int kSamplesPerFrame = hift::kSamplesPerFrame;
    static constexpr int kMels = 80;

    HiftVocoder(const std::string & hifigan_path, ggml_backend * backend, const HiftOptions & options = {});
    ~HiftVocoder();
    HiftVocoder(const HiftVocoder &) = delete;
    HiftVocoder & operator=(const HiftVocoder &) = delete;

    // mel: kMels x n_frames, channel-major (mel[c * n_frames + t]); source_prefix overwrites the first samples of
    // the excitation (may be empty). Returns 480 * n_frames samples clamped to +-0.99; *source_out (if given)
    // receives the excitation actually used.
    std::vector<float> synthesize(const std::vector<float> & mel, int n_frames,
                                  const std::vector<float> & source_prefix, std::vector<float> * source_out);
    // The F0 predictor alone: Hz per mel frame.
    std::vector<float> predict_f0(const std::vector<float> & mel, int n_frames);

    int base_channels() const { return channels_[0]; }
    // The NSF noise starts again from its seed.
    void restart_noise();

private:
    struct Conv {
        ggml_tensor * w = nullptr;  // ne [kernel, in, out] (PyTorch Conv1d weight)
        ggml_tensor * b = nullptr;  // ne [out], or null
        int kernel = 0;
    };
    struct Snake {
        ggml_tensor * alpha = nullptr;      // ne [channels]
        ggml_tensor * inv_alpha = nullptr;  // 1 / (alpha + 1e-9), as the reference computes it
    };
    struct ResBlock {
        std::vector<Conv> convs1, convs2;
        std::vector<Snake> snakes1, snakes2;
    };
    struct Upsampler {
        Conv conv;  // the polyphase form of the transposed convolution: rate * out channels, no bias
        ggml_tensor * bias = nullptr;
        int rate = 0;
        int half = 0;
    };
    struct Stage {
        Upsampler up;
        Conv source_down;  // over the excitation spectrum's kSpectrumRows channels
        int source_stride = 0;
        ResBlock source_block;
        std::vector<ResBlock> blocks;
    };
    struct HostWeights;

    void read_dims();
    Conv conv(const std::string & name, int n_in, int n_out) const;
    const std::vector<float> & host_weight(const std::string & name, int n_in, int n_out, int * kernel) const;
    ResBlock resblock(const std::string & prefix, int channels, HostWeights & host);
    Upsampler upsampler(int stage, HostWeights & host);
    Stage stage(int index, HostWeights & host);
    void load_tensors(HostWeights & host);
    void load_post(HostWeights & host);
    void upload(HostWeights & host);
    void check_mel(const std::vector<float> & mel, int n_frames) const;

    ggml_tensor * conv_1d(ggml_context * ctx, const Conv & c, ggml_tensor * x, int padding, int dilation) const;
    ggml_tensor * conv_by_time(ggml_context * ctx, const Conv & c, ggml_tensor * x_by_time, int stride, int padding,
                               int dilation) const;
    ggml_tensor * snake(ggml_context * ctx, ggml_tensor * x, const Snake & s) const;
    ggml_tensor * run_resblock(ggml_context * ctx, const ResBlock & block, ggml_tensor * x) const;
    ggml_tensor * upsample(ggml_context * ctx, const Upsampler & up, ggml_tensor * x) const;
    ggml_tensor * run_stage(ggml_context * ctx, const Stage & stage, ggml_tensor * x, ggml_tensor * spectrum,
                            bool last) const;
    ggml_tensor * source_spectrum(ggml_context * ctx, ggml_tensor * source) const;
    ggml_tensor * spectrum(ggml_context * ctx, ggml_tensor * x) const;
    ggml_tensor * istft(ggml_context * ctx, ggml_tensor * spectrum, ggml_tensor * envelope) const;
    ggml_cgraph * build_f0(ggml_context * ctx, int n_frames, ggml_tensor ** mel, ggml_tensor ** f0) const;
    ggml_cgraph * build_decoder(ggml_context * ctx, int n_frames, ggml_tensor ** mel, ggml_tensor ** source,
                                ggml_tensor ** envelope, ggml_tensor ** pcm) const;
    std::vector<float> decode(const std::vector<float> & mel, int n_frames, const std::vector<float> & source);

    std::string path_;
    ggml_backend * backend_;
    std::unique_ptr<WeightFile> weights_;
    std::unique_ptr<hift::ExcitationSource> excitation_;
    std::unique_ptr<GraphRunner> f0_runner_;
    std::unique_ptr<GraphRunner> decoder_runner_;
    int channels_[4] = {0, 0, 0, 0};  // conv_pre output, then after each upsampler
    int f0_channels_ = 0;
    int n_harmonics_ = 0;  // sines merged into the excitation (fundamental + overtones)
    Conv conv_pre_;
    Conv conv_post_;  // kPostRows outputs: log-magnitudes 0..8, phase inputs 9..17, zero rows after
    std::vector<Conv> f0_convs_;
    ggml_tensor * f0_classifier_w_ = nullptr;  // ne [f0 channels, 1]
    ggml_tensor * f0_classifier_b_ = nullptr;
    std::vector<Stage> stages_;
    ggml_tensor * stft_ = nullptr;  // ne [n_fft, kSpectrumRows]: windowed DFT of one frame
    Conv istft_;                    // windowed inverse DFT + overlap-add as a polyphase conv, 18 -> hop channels
    int istft_half_ = 0;
    ggml_context * own_ctx_ = nullptr;  // weights re-laid out for the graphs (polyphase, padded, DFT bases, Snake)
    ggml_backend_buffer * own_buffer_ = nullptr;
};

}  // namespace omni

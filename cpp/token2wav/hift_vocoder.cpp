#include "token2wav/hift_vocoder.h"

#include <cfloat>
#include <stdexcept>
#include <utility>

#include "core/compute.h"
#include "core/errors.h"
#include "core/weights.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace omni {
namespace {

constexpr int kStages = 3;
constexpr int kUpsampleRates[kStages] = {8, 5, 3};
constexpr int kBlocksPerStage = 3;
constexpr int kDilations[] = {1, 3, 5};
constexpr int kConvsPerBlock = 3;
constexpr int kF0Layers = 5;
constexpr float kUpsampleSlope = 0.1f;
constexpr float kHeadSlope = 0.01f;  // the reference calls F.leaky_relu with its default slope before conv_post
constexpr float kMaxMagnitude = 100.0f;
constexpr float kAudioLimit = 0.99f;
constexpr float kSnakeEpsilon = 1e-9f;
constexpr size_t kMaxNodes = 4096;
constexpr size_t kMaxOwnTensors = 256;
constexpr int kSpectrumPad = hift::kNfft / 2;  // torch.stft centre padding (reflect)
// ggml's fast CPU GEMM wants the unfolded length (channels x kernel) a multiple of 16 and the output count a
// multiple of 4: the excitation spectrum is carried in 32 channels (18 used), conv_post computes 20 (18 used).
constexpr int kSpectrumRows = 32;
constexpr int kPostRows = 20;

std::vector<std::string> resblock_prefixes() {
    std::vector<std::string> prefixes;
    for (int s = 0; s < kStages; ++s) prefixes.push_back("source_resblocks." + std::to_string(s));
    for (int r = 0; r < kStages * kBlocksPerStage; ++r) prefixes.push_back("resblocks." + std::to_string(r));
    return prefixes;
}

std::string alpha_name(const std::string & prefix, int activation, int j) {
    return prefix + ".activations" + std::to_string(activation) + "." + std::to_string(j) + ".alpha";
}

// Tensors read into host memory: the ones re-laid out for the graphs and the host excitation's linear layer.
std::vector<std::string> host_tensor_names() {
    std::vector<std::string> names = {"m_source.l_linear.weight", "m_source.l_linear.bias", "conv_post.weight",
                                      "conv_post.bias"};
    for (int i = 0; i < kStages; ++i) {
        names.push_back("ups." + std::to_string(i) + ".weight");
        names.push_back("source_downs." + std::to_string(i) + ".weight");
    }
    for (const std::string & prefix : resblock_prefixes()) {
        for (int j = 0; j < kConvsPerBlock; ++j) {
            names.push_back(alpha_name(prefix, 1, j));
            names.push_back(alpha_name(prefix, 2, j));
        }
    }
    return names;
}

// The excitation stride of stage i: the product of the later upsample rates.
int source_stride(int stage) {
    int stride = 1;
    for (int i = stage + 1; i < kStages; ++i) stride *= kUpsampleRates[i];
    return stride;
}

// Channel-major (mel[c * T + t]) -> frame-major: the graphs keep channels fastest, ne [80, T].
std::vector<float> transpose(const std::vector<float> & values, int rows, int cols) {
    std::vector<float> out(values.size());
    for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < cols; ++c)
            out[static_cast<size_t>(c) * rows + r] = values[static_cast<size_t>(r) * cols + c];
    }
    return out;
}

// Reflect padding (no edge repeat) of `pad` samples on both sides, as torch.stft(center=True) does.
std::vector<float> reflect_pad(const std::vector<float> & signal, int pad) {
    const size_t n = signal.size();
    std::vector<float> padded(n + 2 * static_cast<size_t>(pad));
    for (int i = 0; i < pad; ++i) {
        padded[i] = signal[pad - i];
        padded[pad + n + i] = signal[n - 2 - i];
    }
    std::copy(signal.begin(), signal.end(), padded.begin() + pad);
    return padded;
}

}  // namespace

// Weights re-laid out for the graphs, waiting for the own buffer: created in own_ctx_, filled after allocation.
struct HiftVocoder::HostWeights {
    std::vector<std::pair<ggml_tensor *, std::vector<float>>> pending;

    ggml_tensor * add(ggml_context * ctx, std::vector<float> data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1) {
        ggml_tensor * t = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, ne0, ne1, ne2);
        pending.emplace_back(t, std::move(data));
        return t;
    }
};

HiftVocoder::HiftVocoder(const std::string & hifigan_path, ggml_backend * backend, const HiftOptions & options)
    : path_(hifigan_path), backend_(backend) {
    WeightFileOptions weight_options;
    weight_options.host = host_tensor_names();
    weights_ = std::make_unique<WeightFile>(hifigan_path, backend, weight_options);
    read_dims();

    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * kMaxOwnTensors;
    params.no_alloc = true;
    own_ctx_ = ggml_init(params);
    if (!own_ctx_) throw EngineError("could not create the vocoder weight context");
    HostWeights host;
    load_tensors(host);
    upload(host);

    const HostTensor & merge_w = weights_->host("m_source.l_linear.weight", {n_harmonics_});
    const HostTensor & merge_b = weights_->host("m_source.l_linear.bias", {1});
    excitation_ =
        std::make_unique<hift::ExcitationSource>(merge_w.data, merge_b.data[0], options.add_noise, options.noise_seed);
    f0_runner_ = std::make_unique<GraphRunner>(backend, kMaxNodes);
    decoder_runner_ = std::make_unique<GraphRunner>(backend, kMaxNodes);
}

HiftVocoder::~HiftVocoder() {
    f0_runner_.reset();
    decoder_runner_.reset();
    if (own_buffer_) ggml_backend_buffer_free(own_buffer_);
    if (own_ctx_) ggml_free(own_ctx_);
}

void HiftVocoder::read_dims() {
    const GgufFile & meta = weights_->meta();
    const TensorInfo pre = meta.tensor("conv_pre.weight");
    if (pre.ne.size() != 3 || pre.ne[1] != kMels || pre.ne[2] % (1 << kStages) != 0) {
        throw ModelFileError(path_ +
                             ": conv_pre.weight must have ne (kernel, 80, channels) with channels divisible by " +
                             std::to_string(1 << kStages));
    }
    channels_[0] = static_cast<int>(pre.ne[2]);
    for (int i = 0; i < kStages; ++i) channels_[i + 1] = channels_[i] / 2;
    const TensorInfo f0 = meta.tensor("f0_predictor.condnet.0.weight");
    if (f0.ne.size() != 3) throw ModelFileError(path_ + ": f0_predictor.condnet.0.weight must be 3-D");
    f0_channels_ = static_cast<int>(f0.ne[2]);
    const TensorInfo merge = meta.tensor("m_source.l_linear.weight");
    if (merge.ne.size() != 1 || merge.ne[0] < 1) {
        throw ModelFileError(path_ + ": m_source.l_linear.weight must have ne (harmonics, 1)");
    }
    n_harmonics_ = static_cast<int>(merge.ne[0]);
}

// A Conv1d used as stored (ne [kernel, in, out] is the matrix of an im2col-unfolded input) and its bias.
HiftVocoder::Conv HiftVocoder::conv(const std::string & name, int n_in, int n_out) const {
    const TensorInfo info = weights_->meta().tensor(name + ".weight");
    if (info.type != GGML_TYPE_F32) throw ModelFileError(path_ + ": tensor '" + name + ".weight' is not F32");
    Conv c;
    c.kernel = static_cast<int>(info.ne[0]);
    c.w = weights_->get(name + ".weight", {c.kernel, n_in, n_out});
    c.b = weights_->get(name + ".bias", {n_out});
    return c;
}

// A weight read into host memory (for a re-layout), ne [kernel, in, out].
const std::vector<float> & HiftVocoder::host_weight(const std::string & name, int n_in, int n_out, int * kernel) const {
    const TensorInfo info = weights_->meta().tensor(name);
    if (info.type != GGML_TYPE_F32) throw ModelFileError(path_ + ": tensor '" + name + "' is not F32");
    *kernel = static_cast<int>(info.ne[0]);
    return weights_->host(name, {*kernel, n_in, n_out}).data;
}

HiftVocoder::ResBlock HiftVocoder::resblock(const std::string & prefix, int channels, HostWeights & host) {
    ResBlock block;
    for (int j = 0; j < kConvsPerBlock; ++j) {
        const std::string index = "." + std::to_string(j);
        block.convs1.push_back(conv(prefix + ".convs1" + index, channels, channels));
        block.convs2.push_back(conv(prefix + ".convs2" + index, channels, channels));
        if (block.convs1.back().kernel % 2 == 0 || block.convs2.back().kernel != block.convs1.back().kernel) {
            throw ModelFileError(path_ + ": " + prefix + " convs" + index + " kernels must be equal and odd");
        }
        for (int activation = 1; activation <= 2; ++activation) {
            const std::vector<float> & alpha = weights_->host(alpha_name(prefix, activation, j), {channels}).data;
            std::vector<float> inverse(alpha.size());
            for (size_t c = 0; c < alpha.size(); ++c) inverse[c] = 1.0f / (alpha[c] + kSnakeEpsilon);
            Snake s{host.add(own_ctx_, alpha, channels), host.add(own_ctx_, std::move(inverse), channels)};
            (activation == 1 ? block.snakes1 : block.snakes2).push_back(s);
        }
    }
    return block;
}

HiftVocoder::Upsampler HiftVocoder::upsampler(int stage, HostWeights & host) {
    const std::string name = "ups." + std::to_string(stage);
    const int rate = kUpsampleRates[stage];
    const int n_in = channels_[stage];
    const int n_out = channels_[stage + 1];
    int kernel = 0;
    const std::vector<float> & w = host_weight(name + ".weight", n_out, n_in, &kernel);  // ConvTranspose1d
    if (kernel < rate || (kernel - rate) % 2 != 0) {
        throw ModelFileError(path_ + ": " + name + ".weight kernel " + std::to_string(kernel) +
                             " does not fit upsample rate " + std::to_string(rate) + " (kernel = rate + 2 * padding)");
    }
    hift::PolyphaseKernel p = hift::polyphase_kernel(w, n_in, n_out, kernel, rate, (kernel - rate) / 2);
    Upsampler up;
    up.conv.w = host.add(own_ctx_, std::move(p.weight), p.taps, n_in, rate * n_out);
    up.conv.kernel = p.taps;
    up.bias = weights_->get(name + ".bias", {n_out});
    up.rate = rate;
    up.half = p.half;
    return up;
}

HiftVocoder::Stage HiftVocoder::stage(int index, HostWeights & host) {
    const int channels = channels_[index + 1];
    Stage s;
    s.up = upsampler(index, host);
    s.source_stride = source_stride(index);
    const std::string down = "source_downs." + std::to_string(index);
    const std::vector<float> & w =
        host_weight(down + ".weight", hift::kSpectrumChannels, channels, &s.source_down.kernel);
    const int expected = s.source_stride == 1 ? 1 : 2 * s.source_stride;
    if (s.source_down.kernel != expected) {
        throw ModelFileError(path_ + ": " + down + " kernel is " + std::to_string(s.source_down.kernel) +
                             ", expected " + std::to_string(expected));
    }
    const int k = s.source_down.kernel;
    s.source_down.w = host.add(own_ctx_, hift::pad_inputs(w, channels, hift::kSpectrumChannels, k, kSpectrumRows), k,
                               kSpectrumRows, channels);
    s.source_down.b = weights_->get(down + ".bias", {channels});
    s.source_block = resblock("source_resblocks." + std::to_string(index), channels, host);
    for (int j = 0; j < kBlocksPerStage; ++j) {
        s.blocks.push_back(resblock("resblocks." + std::to_string(index * kBlocksPerStage + j), channels, host));
    }
    return s;
}

// conv_post with two zero output channels appended (kPostRows).
void HiftVocoder::load_post(HostWeights & host) {
    const int n_in = channels_[kStages];
    const std::vector<float> & w = host_weight("conv_post.weight", n_in, hift::kSpectrumChannels, &conv_post_.kernel);
    const std::vector<float> & b = weights_->host("conv_post.bias", {hift::kSpectrumChannels}).data;
    std::vector<int> rows(kPostRows, -1);
    for (int r = 0; r < hift::kSpectrumChannels; ++r) rows[r] = r;
    const size_t row_size = static_cast<size_t>(n_in) * conv_post_.kernel;
    conv_post_.w = host.add(own_ctx_, hift::select_rows(w, row_size, rows), conv_post_.kernel, n_in, kPostRows);
    conv_post_.b = host.add(own_ctx_, hift::select_rows(b, 1, rows), kPostRows);
}

void HiftVocoder::load_tensors(HostWeights & host) {
    conv_pre_ = conv("conv_pre", kMels, channels_[0]);
    load_post(host);
    for (int layer = 0; layer < kF0Layers; ++layer) {
        const std::string name = "f0_predictor.condnet." + std::to_string(2 * layer);
        f0_convs_.push_back(conv(name, layer == 0 ? kMels : f0_channels_, f0_channels_));
    }
    f0_classifier_w_ = weights_->get("f0_predictor.classifier.weight", {f0_channels_, 1});
    f0_classifier_b_ = weights_->get("f0_predictor.classifier.bias", {1});
    for (const Conv * c : {&conv_pre_, &conv_post_, &f0_convs_[0]}) {
        if (c->kernel % 2 == 0) throw ModelFileError(path_ + ": conv_pre, conv_post and F0 kernels must be odd");
    }
    for (int i = 0; i < kStages; ++i) stages_.push_back(stage(i, host));
    stft_ = host.add(own_ctx_, hift::stft_matrix(kSpectrumRows), hift::kNfft, kSpectrumRows);
    hift::PolyphaseKernel inverse =
        hift::polyphase_kernel(hift::istft_weight(), hift::kSpectrumChannels, 1, hift::kNfft, hift::kHop, kSpectrumPad);
    istft_.w = host.add(own_ctx_, std::move(inverse.weight), inverse.taps, hift::kSpectrumChannels, hift::kHop);
    istft_.kernel = inverse.taps;
    istft_half_ = inverse.half;
}

void HiftVocoder::upload(HostWeights & host) {
    own_buffer_ = ggml_backend_alloc_ctx_tensors(own_ctx_, backend_);
    if (!own_buffer_) throw EngineError("out of memory allocating the vocoder's weights");
    for (const auto & [tensor, data] : host.pending) {
        ggml_backend_tensor_set(tensor, data.data(), 0, data.size() * sizeof(float));
    }
}

void HiftVocoder::check_mel(const std::vector<float> & mel, int n_frames) const {
    if (n_frames < 1 || mel.size() != static_cast<size_t>(kMels) * n_frames) {
        throw std::invalid_argument("mel must hold 80 x n_frames values with n_frames >= 1 (got " +
                                    std::to_string(mel.size()) + " values for " + std::to_string(n_frames) +
                                    " frames)");
    }
}

// x [in, T] (channels fastest) -> [out, T'], stride 1.
ggml_tensor * HiftVocoder::conv_1d(ggml_context * ctx, const Conv & c, ggml_tensor * x, int padding,
                                   int dilation) const {
    return conv_by_time(ctx, c, ggml_cont(ctx, ggml_transpose(ctx, x)), 1, padding, dilation);
}

// Time-major x [T, in] -> [out, T']: F32 im2col (ggml_conv_1d's is F16), one matrix product with the weight as
// stored, plus the bias.
ggml_tensor * HiftVocoder::conv_by_time(ggml_context * ctx, const Conv & c, ggml_tensor * x_by_time, int stride,
                                        int padding, int dilation) const {
    ggml_tensor * cols = ggml_im2col(ctx, c.w, x_by_time, stride, 0, padding, 0, dilation, 0, false, GGML_TYPE_F32);
    cols = ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[1]);
    ggml_tensor * y = ggml_mul_mat(ctx, ggml_reshape_2d(ctx, c.w, c.w->ne[0] * c.w->ne[1], c.w->ne[2]), cols);
    return c.b ? ggml_add(ctx, y, c.b) : y;
}

// Snake(x) = x + sin^2(alpha x) / (alpha + 1e-9), alpha per channel.
ggml_tensor * HiftVocoder::snake(ggml_context * ctx, ggml_tensor * x, const Snake & s) const {
    ggml_tensor * wave = ggml_sqr(ctx, ggml_sin(ctx, ggml_mul(ctx, x, s.alpha)));
    return ggml_add(ctx, x, ggml_mul(ctx, wave, s.inv_alpha));
}

ggml_tensor * HiftVocoder::run_resblock(ggml_context * ctx, const ResBlock & block, ggml_tensor * x) const {
    for (int j = 0; j < kConvsPerBlock; ++j) {
        const int k = block.convs1[j].kernel;
        const int d = kDilations[j];
        ggml_tensor * y = conv_1d(ctx, block.convs1[j], snake(ctx, x, block.snakes1[j]), d * (k - 1) / 2, d);
        y = conv_1d(ctx, block.convs2[j], snake(ctx, y, block.snakes2[j]), (k - 1) / 2, 1);
        x = ggml_add(ctx, y, x);
    }
    return x;
}

// The transposed convolution as its polyphase convolution: [rate * out, T] (channel o + out * r) is the output
// [out, rate * T] as it stands.
ggml_tensor * HiftVocoder::upsample(ggml_context * ctx, const Upsampler & up, ggml_tensor * x) const {
    ggml_tensor * y = conv_1d(ctx, up.conv, x, up.half, 1);
    return ggml_add(ctx, ggml_reshape_2d(ctx, y, y->ne[0] / up.rate, up.rate * y->ne[1]), up.bias);
}

// LeakyReLU and upsampling, the down-sampled excitation spectrum through its resblock added, then the mean of
// the stage's resblocks.
ggml_tensor * HiftVocoder::run_stage(ggml_context * ctx, const Stage & stage, ggml_tensor * x, ggml_tensor * spectrum,
                                     bool last) const {
    x = upsample(ctx, stage.up, ggml_leaky_relu(ctx, x, kUpsampleSlope, false));
    if (last) x = ggml_concat(ctx, ggml_view_2d(ctx, x, x->ne[0], 1, x->nb[1], x->nb[1]), x, 1);  // reflect 1 left
    const int stride = stage.source_stride;
    ggml_tensor * fused = conv_by_time(ctx, stage.source_down, spectrum, stride, stride / 2, 1);
    x = ggml_add(ctx, x, run_resblock(ctx, stage.source_block, fused));
    ggml_tensor * sum = nullptr;
    for (const ResBlock & block : stage.blocks) {
        ggml_tensor * y = run_resblock(ctx, block, x);
        sum = sum ? ggml_add(ctx, sum, y) : y;
    }
    return ggml_scale(ctx, sum, 1.0f / static_cast<float>(stage.blocks.size()));
}

// torch.stft of the reflect-padded excitation [n + 16, 1]: frames [n_fft, F] times the DFT matrix -> [F, 32]
// (time-major, as the strided source convolutions unfold it).
ggml_tensor * HiftVocoder::source_spectrum(ggml_context * ctx, ggml_tensor * source) const {
    ggml_tensor * frame_shape = ggml_reshape_3d(ctx, stft_, hift::kNfft, 1, kSpectrumRows);
    ggml_tensor * frames = ggml_im2col(ctx, frame_shape, source, hift::kHop, 0, 0, 0, 1, 0, false, GGML_TYPE_F32);
    return ggml_mul_mat(ctx, ggml_reshape_2d(ctx, frames, frames->ne[0], frames->ne[1]), stft_);
}

// conv_post [20, F] -> magnitude min(exp, 100) and phase sin(.) (then used as the angle) -> [re ; im] [18, F].
ggml_tensor * HiftVocoder::spectrum(ggml_context * ctx, ggml_tensor * x) const {
    const int64_t n = x->ne[1];
    ggml_tensor * log_magnitude = ggml_cont(ctx, ggml_view_2d(ctx, x, hift::kBins, n, x->nb[1], 0));
    ggml_tensor * phase_in = ggml_cont(ctx, ggml_view_2d(ctx, x, hift::kBins, n, x->nb[1], hift::kBins * x->nb[0]));
    ggml_tensor * magnitude = ggml_clamp(ctx, ggml_exp(ctx, log_magnitude), -FLT_MAX, kMaxMagnitude);
    ggml_tensor * phase = ggml_sin(ctx, phase_in);
    return ggml_concat(ctx, ggml_mul(ctx, magnitude, ggml_cos(ctx, phase)),
                       ggml_mul(ctx, magnitude, ggml_sin(ctx, phase)), 0);
}

// Windowed inverse DFT + overlap-add of [18, F] (one polyphase conv: [hop, F] is the signal), then torch.istft's
// centre crop and window-square normalisation: hop * (F - 1) samples.
ggml_tensor * HiftVocoder::istft(ggml_context * ctx, ggml_tensor * spectrum, ggml_tensor * envelope) const {
    const int64_t n_frames = spectrum->ne[1];
    ggml_tensor * y = ggml_reshape_1d(ctx, conv_1d(ctx, istft_, spectrum, istft_half_, 1), hift::kHop * n_frames);
    y = ggml_view_1d(ctx, y, hift::kHop * (n_frames - 1), 0);
    return ggml_clamp(ctx, ggml_div(ctx, y, envelope), -kAudioLimit, kAudioLimit);
}

ggml_cgraph * HiftVocoder::build_f0(ggml_context * ctx, int n_frames, ggml_tensor ** mel, ggml_tensor ** f0) const {
    ggml_cgraph * graph = ggml_new_graph_custom(ctx, kMaxNodes, false);
    *mel = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, kMels, n_frames);
    ggml_set_input(*mel);
    ggml_tensor * x = *mel;
    for (const Conv & c : f0_convs_) x = ggml_elu(ctx, conv_1d(ctx, c, x, c.kernel / 2, 1));
    *f0 = ggml_abs(ctx, ggml_add(ctx, ggml_mul_mat(ctx, f0_classifier_w_, x), f0_classifier_b_));  // [1, T]
    ggml_set_output(*f0);
    ggml_build_forward_expand(graph, *f0);
    return graph;
}

ggml_cgraph * HiftVocoder::build_decoder(ggml_context * ctx, int n_frames, ggml_tensor ** mel, ggml_tensor ** source,
                                         ggml_tensor ** envelope, ggml_tensor ** pcm) const {
    ggml_cgraph * graph = ggml_new_graph_custom(ctx, kMaxNodes, false);
    const int64_t n_samples = static_cast<int64_t>(n_frames) * kSamplesPerFrame;
    *mel = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, kMels, n_frames);
    *source = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_samples + 2 * kSpectrumPad, 1);
    *envelope = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n_samples);
    for (ggml_tensor * input : {*mel, *source, *envelope}) ggml_set_input(input);

    ggml_tensor * excitation = source_spectrum(ctx, *source);
    ggml_tensor * x = conv_1d(ctx, conv_pre_, *mel, conv_pre_.kernel / 2, 1);
    for (int i = 0; i < kStages; ++i) x = run_stage(ctx, stages_[i], x, excitation, i == kStages - 1);
    x = conv_1d(ctx, conv_post_, ggml_leaky_relu(ctx, x, kHeadSlope, false), conv_post_.kernel / 2, 1);
    *pcm = istft(ctx, spectrum(ctx, x), *envelope);
    ggml_set_output(*pcm);
    ggml_build_forward_expand(graph, *pcm);
    return graph;
}

std::vector<float> HiftVocoder::predict_f0(const std::vector<float> & mel, int n_frames) {
    check_mel(mel, n_frames);
    const std::vector<float> frames = transpose(mel, kMels, n_frames);
    ggml_tensor * mel_in = nullptr;
    ggml_tensor * f0_out = nullptr;
    f0_runner_->run([&](ggml_context * ctx) { return build_f0(ctx, n_frames, &mel_in, &f0_out); },
                    [&]() { ggml_backend_tensor_set(mel_in, frames.data(), 0, frames.size() * sizeof(float)); });
    std::vector<float> f0(static_cast<size_t>(n_frames));
    ggml_backend_tensor_get(f0_out, f0.data(), 0, f0.size() * sizeof(float));
    return f0;
}

std::vector<float> HiftVocoder::decode(const std::vector<float> & mel, int n_frames,
                                       const std::vector<float> & source) {
    const std::vector<float> frames = transpose(mel, kMels, n_frames);
    const std::vector<float> padded = reflect_pad(source, kSpectrumPad);
    const std::vector<float> envelope = hift::istft_envelope(n_frames * kSamplesPerFrame / hift::kHop + 1);
    ggml_tensor *mel_in = nullptr, *source_in = nullptr, *envelope_in = nullptr, *pcm_out = nullptr;
    decoder_runner_->run(
        [&](ggml_context * ctx) { return build_decoder(ctx, n_frames, &mel_in, &source_in, &envelope_in, &pcm_out); },
        [&]() {
            ggml_backend_tensor_set(mel_in, frames.data(), 0, frames.size() * sizeof(float));
            ggml_backend_tensor_set(source_in, padded.data(), 0, padded.size() * sizeof(float));
            ggml_backend_tensor_set(envelope_in, envelope.data(), 0, envelope.size() * sizeof(float));
        });
    std::vector<float> pcm(source.size());
    ggml_backend_tensor_get(pcm_out, pcm.data(), 0, pcm.size() * sizeof(float));
    return pcm;
}

std::vector<float> HiftVocoder::synthesize(const std::vector<float> & mel, int n_frames,
                                           const std::vector<float> & source_prefix, std::vector<float> * source_out) {
    check_mel(mel, n_frames);
    const size_t n_samples = static_cast<size_t>(n_frames) * kSamplesPerFrame;
    if (source_prefix.size() > n_samples) {
        throw std::invalid_argument("source_prefix has " + std::to_string(source_prefix.size()) +
                                    " samples, more than the mel's " + std::to_string(n_samples));
    }
    std::vector<float> source = excitation_->generate(predict_f0(mel, n_frames));
    std::copy(source_prefix.begin(), source_prefix.end(), source.begin());
    std::vector<float> pcm = decode(mel, n_frames, source);
    if (source_out) *source_out = std::move(source);
    return pcm;
}

void HiftVocoder::restart_noise() {
    excitation_->restart_noise();
}

}  // namespace omni

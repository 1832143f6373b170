#include "token2wav/token2wav.h"

#include <stdexcept>
#include <string>

namespace omni {

Token2Wav::Token2Wav(const Token2WavOptions & options) {
    token2mel_ = std::make_unique<Token2Mel>(options.flow);
    vocoder_backend_ = std::make_unique<Backend>(BackendOptions{options.flow.use_gpu, options.flow.n_threads});
    HiftOptions hift;
    hift.add_noise = options.vocoder_noise;
    hift.noise_seed = options.flow.noise_seed;
    vocoder_ =
        std::make_unique<HiftVocoder>(path_in(options.flow.folder, "hifigan2.gguf"), vocoder_backend_->get(), hift);
    stream_ = std::make_unique<VocoderStream>(*vocoder_);
    reset();
}

Token2Wav::~Token2Wav() = default;

void Token2Wav::reset() {
    token2mel_->reset();
    stream_->reset();
    vocoder_->restart_noise();  // every stream draws the same vocoder noise: same codes, same audio
    buffer_.assign(kLeadingSilence, Token2Mel::kSilenceToken);
    got_tokens_ = false;
}

void Token2Wav::append(const std::vector<int> & tokens) {
    for (int token : tokens) {
        if (token < 0 || token >= token2mel_->n_tokens()) {
            throw std::invalid_argument("tokens: " + std::to_string(token) + " is outside [0, " +
                                        std::to_string(token2mel_->n_tokens()) + ")");
        }
    }
    buffer_.insert(buffer_.end(), tokens.begin(), tokens.end());
    got_tokens_ = got_tokens_ || !tokens.empty();
}

bool Token2Wav::step(std::vector<float> & pcm) {
    const size_t window = static_cast<size_t>(window_tokens());
    if (buffer_.size() < window) return false;
    const std::vector<int> tokens(buffer_.begin(), buffer_.begin() + static_cast<long>(window));
    const std::vector<float> mel = token2mel_->feed(tokens, false);
    const std::vector<float> out = stream_->feed(mel, static_cast<int>(mel.size()) / token2mel_->n_mels(), false);
    pcm.insert(pcm.end(), out.begin(), out.end());
    buffer_.erase(buffer_.begin(), buffer_.begin() + Token2Mel::kChunkTokens);
    return true;
}

std::vector<float> Token2Wav::finish() {
    std::vector<float> pcm;
    if (got_tokens_) {
        const std::vector<float> mel = token2mel_->feed(buffer_, true);
        pcm = stream_->feed(mel, static_cast<int>(mel.size()) / token2mel_->n_mels(), true);
    }
    reset();
    return pcm;
}

std::vector<float> Token2Wav::push(const std::vector<int> & tokens, bool final) {
    append(tokens);
    std::vector<float> pcm;
    while (step(pcm)) {
    }
    if (final) {
        const std::vector<float> rest = finish();
        pcm.insert(pcm.end(), rest.begin(), rest.end());
    }
    return pcm;
}

}  // namespace omni

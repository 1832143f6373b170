// The streamed speech decoder (token2wav.md §5.1, §5.4): speech tokens -> 28-token windows (stride 25, three
// silence tokens in front of every stream) -> Token2Mel -> the HiFT vocoder stream -> 24 kHz PCM.
#pragma once

#include <memory>
#include <vector>

#include "token2wav/hift_vocoder.h"
#include "token2wav/token2mel.h"
#include "token2wav/vocoder_stream.h"

namespace omni {

struct Token2WavOptions {
    Token2MelOptions flow;
    bool vocoder_noise = true;  // the NSF noise of the reference vocoder; off for parity tests
};

class Token2Wav {
public:
    static constexpr int kLeadingSilence = 3;  // silence tokens before each stream (120 ms)

    explicit Token2Wav(const Token2WavOptions & options);
    ~Token2Wav();
    Token2Wav(const Token2Wav &) = delete;
    Token2Wav & operator=(const Token2Wav &) = delete;

    const Token2Mel & token2mel() const { return *token2mel_; }
    int window_tokens() const { return token2mel_->max_window(); }
    // Appends tokens to the stream and runs every complete window; `final` also runs the rest and ends the stream
    // (the next push starts a new one). Returns the PCM emitted by this call.
    std::vector<float> push(const std::vector<int> & tokens, bool final);
    // Runs at most one complete window; returns false (and nothing) when fewer than a window's tokens wait.
    bool step(std::vector<float> & pcm);
    // Ends the stream: the remaining tokens as the last window (nothing if the stream got no token).
    std::vector<float> finish();
    void append(const std::vector<int> & tokens);
    int buffered() const { return static_cast<int>(buffer_.size()); }
    void reset();

private:
    std::unique_ptr<Token2Mel> token2mel_;
    // The vocoder keeps a backend of its own: running it on Token2Mel's CUDA backend measured 123-129 ms per
    // full-size H100 window, against the bench's 86 ms with two backends.
    std::unique_ptr<Backend> vocoder_backend_;
    std::unique_ptr<HiftVocoder> vocoder_;
    std::unique_ptr<VocoderStream> stream_;
    std::vector<int> buffer_;
    bool got_tokens_ = false;
};

}  // namespace omni

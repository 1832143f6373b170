// Streaming over the non-causal HiFT vocoder (token2wav.md §5.4, SA `Token2wav.stream`): each call vocodes the
// last 8 mel frames of the previous call plus the new ones, overwrites the start of the excitation with the
// previous call's last 3840 excitation samples, cross-fades the first 3840 output samples with the held-back
// tail of the previous call (Hamming window of 7680), and holds back its own last 3840 samples unless final.
#pragma once

#include <vector>

#include "token2wav/hift_vocoder.h"

namespace omni {

class VocoderStream {
public:
    static constexpr int kCachedFrames = 8;
    static constexpr int kOverlap = kCachedFrames * HiftVocoder::kSamplesPerFrame;  // 3840 samples

    explicit VocoderStream(HiftVocoder & vocoder);

    // mel: kMels x n_frames, channel-major. Returns the samples emitted by this call: 480 * (cached + n_frames)
    // minus the held-back 3840 (non-final), or all of them (final). A final call ends the stream (the state is
    // reset); a final call with nothing cached and no frames emits nothing. A non-final call needs n_frames >= 1
    // and at least 8 frames together with the cached ones.
    std::vector<float> feed(const std::vector<float> & mel, int n_frames, bool final);
    void reset();

    int cached_frames() const { return cached_frames_; }

private:
    std::vector<float> join_mel(const std::vector<float> & mel, int n_frames) const;
    void cross_fade(std::vector<float> & speech) const;
    void keep_tails(const std::vector<float> & mel_in, int n_frames_in, const std::vector<float> & source,
                    const std::vector<float> & speech);

    HiftVocoder & vocoder_;
    std::vector<double> window_;    // Hamming(2 * kOverlap), float64 like the reference's numpy window
    std::vector<float> mel_cache_;  // kMels x cached_frames_, channel-major
    int cached_frames_ = 0;
    std::vector<float> source_cache_;
    std::vector<float> speech_cache_;
};

}  // namespace omni

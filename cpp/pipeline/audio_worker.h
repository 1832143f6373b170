// The Token2Wav stage's thread: groups of speech codes in (from the TTS thread), audio events out (24 kHz int16
// PCM per vocoder window). Each turn is one stream. The TTS thread hands over the turn's end with its last group,
// so the stats and end_of_turn leave after the turn's last audio.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "pipeline/events.h"
#include "pipeline/queue.h"
#include "pipeline/speech_worker.h"
#include "token2wav/token2wav.h"

namespace omni {

class AudioWorker {
public:
    using Emit = std::function<void(Event)>;
    using Stopped = std::function<bool(int turn)>;

    AudioWorker(Token2Wav & token2wav, Emit emit, Stopped stopped, double (*clock_ms)());
    ~AudioWorker();
    AudioWorker(const AudioWorker &) = delete;
    AudioWorker & operator=(const AudioWorker &) = delete;

    // Never blocks the TTS thread for long: the queue holds many groups (a group is 25 codes, 1 s of speech).
    bool push(SpeechGroup group);
    void close();

private:
    struct Turn {
        int id = -1;
        int samples = 0;
        double compute_ms = 0.0;
        double first_audio_ms = -1.0;
        bool failed = false;
    };

    void process(SpeechGroup & group);
    void synthesize(SpeechGroup & group);
    void emit_pcm(const std::vector<float> & pcm, int n_input_tokens, double t_generate);
    void finish_turn(SpeechGroup & group);

    Token2Wav & token2wav_;
    Emit emit_;
    Stopped stopped_;
    double (*clock_ms_)();
    Turn turn_;
    QueueThread<SpeechGroup> groups_{4096,
                                     [this](SpeechGroup & item) { process(item); }};  // last: its thread uses the above
};

// float PCM -> int16: clip to [-1, 1], scale by 32767, truncate (pipeline.md §8.3).
std::vector<int16_t> to_pcm16(const std::vector<float> & pcm);

}  // namespace omni

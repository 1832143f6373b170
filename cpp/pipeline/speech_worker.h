// The TTS stage's thread: text chunks (with the LLM's hidden states) in, tts_chunk events and 25-code groups
// out. The LLM thread builds the chunks and pushes them through a queue of one, so it is never more than one
// chunk ahead. The job that ends a turn also carries the turn's end, so every event of a turn leaves in order.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/events.h"
#include "pipeline/queue.h"
#include "tts/speech_generator.h"

namespace omni {

struct SpeechJob {
    int turn = 0;
    int chunk_idx = 0;
    std::vector<int> ids;       // TTS-valid LLM tokens
    std::vector<float> hidden;  // their final-norm hidden states, ids.size() x n_llm_embd
    std::string text;           // every piece of text the LLM produced for the chunk
    bool last = false;
    TtsSamplingParams params;
    // Set on the turn's final job: the worker emits the stats and end_of_turn after its speech.
    bool end = false;
    std::string reason;
    TurnStats stats;
    double t_generate = 0.0;
};

// Speech codes for the next stage (Token2Wav), in groups of kSpeechGroup.
struct SpeechGroup {
    int turn = 0;
    std::vector<int> codes;
    bool final = false;  // the turn's last group: the stream ends after it
    bool end = false;    // carries the turn's end: the next stage emits stats and end_of_turn after its audio
    std::string reason;
    TurnStats stats;
    double t_generate = 0.0;
};

// Collects the LLM's tokens of one turn into chunks of kTtsChunkTokens TTS-valid tokens.
class SpeechChunkBuilder {
public:
    SpeechChunkBuilder(int turn, int n_llm_embd, const TtsSamplingParams & params, double t_generate);
    void add(int token, const std::vector<float> & hidden, const std::string & piece);
    void add_text(const std::string & piece) { job_.text += piece; }
    bool full() const { return static_cast<int>(job_.ids.size()) >= kTtsChunkTokens; }
    SpeechJob take(bool last);

private:
    SpeechJob job_;
    int n_llm_embd_;
    int next_chunk_ = 0;
};

class SpeechWorker {
public:
    using Emit = std::function<void(Event)>;
    using Stopped = std::function<bool(int turn)>;
    // Receives each group of codes for the next stage, and the turn's end (which the sink then emits).
    using SpeechSink = std::function<void(SpeechGroup group)>;

    SpeechWorker(Tts & tts, Emit emit, Stopped stopped, double (*clock_ms)());
    ~SpeechWorker();
    SpeechWorker(const SpeechWorker &) = delete;
    SpeechWorker & operator=(const SpeechWorker &) = delete;

    // Blocks while a chunk is already waiting; false once closed.
    bool push(SpeechJob job);
    void set_sink(SpeechSink sink) { sink_ = std::move(sink); }
    void close();

private:
    struct Turn {
        int id = 0;
        std::unique_ptr<SpeechGenerator> generator;
        SpeechTokenGrouper grouper = SpeechTokenGrouper(kSpeechGroup);
        int speech_tokens = 0;
        double tts_ms = 0.0;
        double first_group_ms = -1.0;
        bool failed = false;
    };

    void process(SpeechJob & job);
    void speak(SpeechJob & job);
    void finish_turn(SpeechJob & job);
    void hand_off(const std::vector<int> & codes, bool final, double t_generate);

    Tts & tts_;
    Emit emit_;
    Stopped stopped_;
    double (*clock_ms_)();
    SpeechSink sink_;
    Turn turn_;
    QueueThread<SpeechJob> jobs_{1, [this](SpeechJob & item) { process(item); }};  // last: its thread uses the above
};

}  // namespace omni

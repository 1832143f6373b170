#include "pipeline/speech_worker.h"

#include <algorithm>

namespace omni {

SpeechChunkBuilder::SpeechChunkBuilder(int turn, int n_llm_embd, const TtsSamplingParams & params, double t_generate)
    : n_llm_embd_(n_llm_embd) {
    job_.turn = turn;
    job_.params = params;
    job_.t_generate = t_generate;
}

void SpeechChunkBuilder::add(int token, const std::vector<float> & hidden, const std::string & piece) {
    job_.text += piece;
    if (!is_tts_valid(token)) return;
    job_.ids.push_back(token);
    job_.hidden.insert(job_.hidden.end(), hidden.begin(), hidden.begin() + n_llm_embd_);
}

SpeechJob SpeechChunkBuilder::take(bool last) {
    SpeechJob job = std::move(job_);
    job.chunk_idx = next_chunk_++;
    job.last = last;
    job_ = SpeechJob{};  // the next chunk: same turn, settings and start time, nothing collected yet
    job_.turn = job.turn;
    job_.params = job.params;
    job_.t_generate = job.t_generate;
    return job;
}

SpeechWorker::SpeechWorker(Tts & tts, Emit emit, Stopped stopped, double (*clock_ms)())
    : tts_(tts), emit_(std::move(emit)), stopped_(std::move(stopped)), clock_ms_(clock_ms) {}

SpeechWorker::~SpeechWorker() {
    close();
}

void SpeechWorker::close() {
    jobs_.close();
}

bool SpeechWorker::push(SpeechJob job) {
    return jobs_.push(std::move(job));
}

void SpeechWorker::process(SpeechJob & job) {
    if (job.turn != turn_.id) {
        turn_ = Turn{};
        turn_.id = job.turn;
    }
    if (!turn_.failed && !stopped_(job.turn)) speak(job);
    if (job.end) finish_turn(job);
}

void SpeechWorker::speak(SpeechJob & job) {
    try {
        if (!turn_.generator) {
            turn_.generator = std::make_unique<SpeechGenerator>(tts_, job.params);
            turn_.generator->start_turn();
        }
        const double t0 = clock_ms_();
        std::vector<int> codes =
            turn_.generator->speak_chunk(job.ids, job.hidden.data(), job.last, [&] { return stopped_(job.turn); });
        turn_.tts_ms += clock_ms_() - t0;
        if (stopped_(job.turn)) return;  // a stopped turn says nothing more
        turn_.speech_tokens += static_cast<int>(codes.size());
        for (const std::vector<int> & group : turn_.grouper.push(codes)) hand_off(group, false, job.t_generate);
        emit_(tts_chunk_event(job.turn, std::move(job.text), std::move(codes), job.chunk_idx));
    } catch (const std::exception & e) {
        turn_.failed = true;
        emit_(error_event(job.turn, std::string("speech generation failed: ") + e.what()));
    }
}

void SpeechWorker::finish_turn(SpeechJob & job) {
    const bool spoke = !turn_.failed && !stopped_(job.turn);
    const bool ended_normally = job.reason == "eos" || job.reason == "max_tokens";
    SpeechGroup end;
    end.turn = job.turn;
    end.final = spoke;
    end.end = true;
    end.reason = turn_.failed && ended_normally ? "error" : job.reason;
    end.stats = job.stats;
    end.stats.speech_tokens = turn_.speech_tokens;
    end.stats.tts_ms = turn_.tts_ms;
    end.stats.first_speech_ms = turn_.first_group_ms;
    end.t_generate = job.t_generate;
    if (spoke) end.codes = turn_.grouper.flush();
    turn_ = Turn{};
    if (sink_) {
        sink_(std::move(end));
        return;
    }
    end.stats.total_ms = clock_ms_() - job.t_generate;
    emit_(stats_event(end.turn, end.stats));
    emit_(end_of_turn_event(end.turn, end.reason));
}

void SpeechWorker::hand_off(const std::vector<int> & codes, bool final, double t_generate) {
    if (!final && turn_.first_group_ms < 0) turn_.first_group_ms = clock_ms_() - t_generate;
    if (!sink_) return;
    SpeechGroup group;
    group.turn = turn_.id;
    group.codes = codes;
    group.final = final;
    group.t_generate = t_generate;
    sink_(std::move(group));
}

}  // namespace omni

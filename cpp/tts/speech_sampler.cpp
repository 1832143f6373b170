#include "tts/speech_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "core/errors.h"

namespace omni {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Softmax in double of finite-or-minus-infinity logits (at least one finite).
std::vector<double> softmax(const std::vector<float> & logits) {
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    std::vector<double> probs(logits.size());
    double total = 0.0;
    for (size_t i = 0; i < logits.size(); ++i) {
        probs[i] = logits[i] == kNegInf ? 0.0 : std::exp(static_cast<double>(logits[i]) - max_logit);
        total += probs[i];
    }
    for (double & p : probs) p /= total;
    return probs;
}

int argmax(const std::vector<float> & values) {
    return static_cast<int>(std::max_element(values.begin(), values.end()) - values.begin());
}

}  // namespace

void validate(const TtsSamplingParams & p) {
    const auto fail = [](const std::string & field, const std::string & rule) {
        throw StateError("tts_sampling." + field + " " + rule);
    };
    if (!std::isfinite(p.temperature)) fail("temperature", "must be finite");
    if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
        fail("repetition_penalty", "must be > 0");
    }
    if (p.penalty_window < 0) fail("penalty_window", "must be >= 0");
    if (!(p.top_p > 0.0f) || p.top_p > 1.0f) fail("top_p", "must be in (0, 1]");
    if (p.min_keep < 1) fail("min_keep", "must be >= 1");
    if (p.max_tokens_per_chunk < 1) fail("max_tokens_per_chunk", "must be >= 1");
    if (p.seed < -1) fail("seed", "must be -1 (random) or >= 0");
}

SpeechSampler::SpeechSampler(const TtsSamplingParams & params)
    : params_(params),
      rng_(params.seed >= 0 ? static_cast<uint64_t>(params.seed) : static_cast<uint64_t>(std::random_device{}())) {
    validate(params_);
}

std::vector<float> SpeechSampler::process(const std::vector<float> & logits, const std::vector<int> & history,
                                          bool first) const {
    if (logits.empty()) throw StateError("speech sampler: empty logits");
    std::vector<float> out(logits);
    if (params_.temperature > 0.0f) {
        for (float & v : out) v /= params_.temperature;
    }
    if (first) return out;
    apply_penalty(out, history);
    if (params_.top_p < 1.0f && params_.top_k > 0 && apply_top_p_then_k_fast(out)) return out;
    if (params_.top_p < 1.0f) apply_top_p(out);
    if (params_.top_k > 0) apply_top_k(out);
    return out;
}

// Top-p then top-k without sorting the whole vocabulary: both keep a prefix of the ranking (best first; among
// equal values the higher id first, the mirror of the stable ascending sort), and top-k's prefix is short, so
// only the k best are ranked. An entry is cut by top-p when the probability of all better-ranked ones reaches
// top_p, the same condition as "ascending cumulative <= 1 - top_p". Returns false (nothing changed) when values
// tied with the k-th extend past the ranked prefix; the full path decides those.
bool SpeechSampler::apply_top_p_then_k_fast(std::vector<float> & logits) const {
    const size_t n = logits.size();
    const size_t k = static_cast<size_t>(std::max(params_.top_k, params_.min_keep));
    if (k >= n) return false;
    std::vector<int> ranked(n);
    std::iota(ranked.begin(), ranked.end(), 0);
    std::partial_sort(ranked.begin(), ranked.begin() + static_cast<long>(k), ranked.end(),
                      [&](int a, int b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a > b; });
    const float kth = logits[static_cast<size_t>(ranked[k - 1])];
    for (size_t i = k; i < n; ++i) {
        if (logits[static_cast<size_t>(ranked[i])] == kth) return false;
    }
    const std::vector<double> probs = softmax(logits);
    size_t kept = k;
    double better = 0.0;  // probability of the entries ranked before r
    for (size_t r = 0; r < k; ++r) {
        if (r >= static_cast<size_t>(params_.min_keep) && better >= static_cast<double>(params_.top_p)) {
            kept = r;
            break;
        }
        better += probs[static_cast<size_t>(ranked[r])];
    }
    std::vector<float> out(n, kNegInf);
    for (size_t r = 0; r < kept; ++r) out[static_cast<size_t>(ranked[r])] = logits[static_cast<size_t>(ranked[r])];
    logits.swap(out);
    return true;
}

// alpha = penalty^count over the newest `penalty_window` tokens; negative logits grow, others shrink.
void SpeechSampler::apply_penalty(std::vector<float> & logits, const std::vector<int> & history) const {
    if (params_.repetition_penalty == 1.0f || params_.penalty_window == 0) return;
    const size_t window = std::min(history.size(), static_cast<size_t>(params_.penalty_window));
    std::map<int, int> counts;
    for (size_t i = history.size() - window; i < history.size(); ++i) ++counts[history[i]];
    for (const auto & [token, count] : counts) {
        if (token < 0 || token >= static_cast<int>(logits.size())) continue;
        const float alpha = std::pow(params_.repetition_penalty, static_cast<float>(count));
        float & v = logits[static_cast<size_t>(token)];
        v = v < 0.0f ? v * alpha : v / alpha;
    }
}

// Nucleus cut as the reference's warper defines it: sort ascending (ties by id), drop the entries whose
// cumulative probability is <= 1 - top_p, never the last min_keep.
void SpeechSampler::apply_top_p(std::vector<float> & logits) const {
    std::vector<int> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] < logits[b]; });
    std::vector<float> sorted(logits.size());
    for (size_t i = 0; i < order.size(); ++i) sorted[i] = logits[static_cast<size_t>(order[i])];
    const std::vector<double> probs = softmax(sorted);
    const size_t n = order.size();
    const size_t protected_from = n > static_cast<size_t>(params_.min_keep) ? n - params_.min_keep : 0;
    double cumulative = 0.0;
    for (size_t i = 0; i < protected_from; ++i) {
        cumulative += probs[i];
        if (cumulative <= 1.0 - static_cast<double>(params_.top_p)) logits[static_cast<size_t>(order[i])] = kNegInf;
    }
}

// Keeps the values >= the k-th largest (ties survive), k = max(top_k, min_keep).
void SpeechSampler::apply_top_k(std::vector<float> & logits) const {
    const size_t k = std::min(logits.size(), static_cast<size_t>(std::max(params_.top_k, params_.min_keep)));
    std::vector<float> sorted(logits);
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<long>(k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[k - 1];
    for (float & v : logits) {
        if (v < kth) v = kNegInf;
    }
}

int SpeechSampler::choose(const std::vector<float> & processed, double u) {
    if (processed.empty()) throw StateError("speech sampler: empty logits");
    const std::vector<double> probs = softmax(processed);
    double cumulative = 0.0;
    int last_possible = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
        if (probs[i] <= 0.0) continue;
        last_possible = static_cast<int>(i);
        cumulative += probs[i];
        if (cumulative > u) return last_possible;
    }
    return last_possible;
}

int SpeechSampler::sample(const std::vector<float> & logits, const std::vector<int> & history, bool first) {
    const std::vector<float> processed = process(logits, history, first);
    if (params_.temperature <= 0.0f) return argmax(processed);
    return choose(processed, std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
}

}  // namespace omni

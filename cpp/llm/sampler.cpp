#include "llm/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "core/errors.h"

namespace omni {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float penalise(float logit, float penalty) {
    return logit > 0.0f ? logit / penalty : logit * penalty;
}

// Indices of the finite logits, best first (lower id first on ties). With limit > 0 only the `limit` best
// (plus any tied with the last of them) are kept; a bounded heap finds them in one pass over the vocabulary.
std::vector<int> ranked_candidates(const std::vector<float> & logits, int limit) {
    const auto better = [&](int a, int b) {
        const float la = logits[static_cast<size_t>(a)];
        const float lb = logits[static_cast<size_t>(b)];
        return la != lb ? la > lb : a < b;
    };
    const int n = static_cast<int>(logits.size());
    std::vector<int> order;
    if (limit <= 0 || limit >= n) {
        order.reserve(logits.size());
        for (int i = 0; i < n; ++i) {
            if (logits[static_cast<size_t>(i)] != kNegInf) order.push_back(i);
        }
        std::sort(order.begin(), order.end(), better);
        return order;
    }
    // Min-heap (worst on top) of the best `limit` seen so far.
    order.reserve(static_cast<size_t>(limit) + 1);
    for (int i = 0; i < n; ++i) {
        const float v = logits[static_cast<size_t>(i)];
        if (v == kNegInf) continue;
        if (static_cast<int>(order.size()) < limit) {
            order.push_back(i);
            std::push_heap(order.begin(), order.end(), better);
        } else if (better(i, order.front())) {
            std::pop_heap(order.begin(), order.end(), better);
            order.back() = i;
            std::push_heap(order.begin(), order.end(), better);
        }
    }
    std::sort(order.begin(), order.end(), better);
    if (!order.empty() && static_cast<int>(order.size()) == limit) {
        // Ties with the k-th value survive, as in the reference top-k warper.
        const float kth = logits[static_cast<size_t>(order.back())];
        for (int i = 0; i < n; ++i) {
            if (logits[static_cast<size_t>(i)] == kth && std::find(order.begin(), order.end(), i) == order.end()) {
                order.push_back(i);
            }
        }
        std::sort(order.begin(), order.end(), better);
    }
    return order;
}

std::vector<double> softmax_of(const std::vector<float> & logits, const std::vector<int> & ids) {
    std::vector<double> probs(ids.size());
    if (ids.empty()) {
        return probs;
    }
    const double top = logits[static_cast<size_t>(ids.front())];
    double sum = 0.0;
    for (size_t i = 0; i < ids.size(); ++i) {
        probs[i] = std::exp(static_cast<double>(logits[static_cast<size_t>(ids[i])]) - top);
        sum += probs[i];
    }
    for (double & p : probs) {
        p /= sum;
    }
    return probs;
}

}  // namespace

void validate(const SamplingParams & p) {
    auto bad = [](const char * field, const std::string & why) {
        throw StateError(std::string("sampling.") + field + " " + why);
    };
    if (!std::isfinite(p.temperature) || p.temperature < 0.0f) bad("temperature", "must be >= 0");
    if (!std::isfinite(p.top_p) || p.top_p <= 0.0f || p.top_p > 1.0f) bad("top_p", "must be in (0, 1]");
    if (!std::isfinite(p.min_p) || p.min_p < 0.0f || p.min_p >= 1.0f) bad("min_p", "must be in [0, 1)");
    if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) bad("repetition_penalty", "must be > 0");
    if (p.repetition_window < 0) bad("repetition_window", "must be >= 0");
    if (!std::isfinite(p.length_penalty) || p.length_penalty <= 0.0f) bad("length_penalty", "must be > 0");
}

Sampler::Sampler(const SamplingParams & params) : params_(params) {
    validate(params_);
    const uint64_t seed = params_.seed >= 0 ? static_cast<uint64_t>(params_.seed) : std::random_device{}();
    rng_.seed(seed);
}

std::vector<float> Sampler::penalised_logits(const std::vector<float> & logits, const std::vector<Token> & history,
                                             const std::vector<Token> & terminators,
                                             const std::vector<Token> & forbidden) const {
    std::vector<float> out = logits;
    const auto in_range = [&](Token t) { return t >= 0 && static_cast<size_t>(t) < out.size(); };
    for (Token t : forbidden) {
        if (in_range(t)) out[static_cast<size_t>(t)] = kNegInf;
    }
    if (params_.repetition_penalty != 1.0f && params_.repetition_window > 0) {
        const size_t window = static_cast<size_t>(params_.repetition_window);
        const size_t first = history.size() > window ? history.size() - window : 0;
        std::unordered_set<Token> seen(history.begin() + static_cast<std::ptrdiff_t>(first), history.end());
        for (Token t : seen) {
            if (in_range(t) && out[static_cast<size_t>(t)] != kNegInf) {
                out[static_cast<size_t>(t)] = penalise(out[static_cast<size_t>(t)], params_.repetition_penalty);
            }
        }
    }
    if (params_.length_penalty != 1.0f) {
        for (Token t : terminators) {
            if (in_range(t) && out[static_cast<size_t>(t)] != kNegInf) {
                out[static_cast<size_t>(t)] = penalise(out[static_cast<size_t>(t)], params_.length_penalty);
            }
        }
    }
    return out;
}

Sampler::Candidates Sampler::candidates(const std::vector<float> & logits, const std::vector<Token> & history,
                                        const std::vector<Token> & terminators,
                                        const std::vector<Token> & forbidden) const {
    std::vector<float> scaled = penalised_logits(logits, history, terminators, forbidden);
    const bool greedy = params_.temperature <= 0.0f;
    Candidates c;
    c.ids = ranked_candidates(scaled, greedy ? 1 : params_.top_k);
    if (c.ids.empty()) {
        throw EngineError("every token is forbidden; nothing can be sampled");
    }
    if (greedy) {
        c.ids.resize(1);
        c.probs.assign(1, 1.0);
        return c;
    }
    for (int id : c.ids) {
        scaled[static_cast<size_t>(id)] /= params_.temperature;
    }
    c.probs = softmax_of(scaled, c.ids);
    if (params_.top_p < 1.0f) {
        // Keep the most likely tokens up to and including the one whose cumulative probability reaches top_p.
        double cumulative = 0.0;
        size_t keep = 0;
        while (keep < c.probs.size()) {
            cumulative += c.probs[keep++];
            if (cumulative >= params_.top_p) break;
        }
        c.ids.resize(keep);
        c.probs = softmax_of(scaled, c.ids);
    }
    if (params_.min_p > 0.0f) {
        const double floor = c.probs.front() * params_.min_p;
        size_t keep = 1;
        while (keep < c.probs.size() && c.probs[keep] >= floor) ++keep;
        c.ids.resize(keep);
        c.probs = softmax_of(scaled, c.ids);
    }
    return c;
}

std::vector<float> Sampler::probabilities(const std::vector<float> & logits, const std::vector<Token> & history,
                                          const std::vector<Token> & terminators,
                                          const std::vector<Token> & forbidden) const {
    const Candidates c = candidates(logits, history, terminators, forbidden);
    std::vector<float> probs(logits.size(), 0.0f);
    for (size_t i = 0; i < c.ids.size(); ++i) {
        probs[static_cast<size_t>(c.ids[i])] = static_cast<float>(c.probs[i]);
    }
    return probs;
}

Token Sampler::sample(const std::vector<float> & logits, const std::vector<Token> & history,
                      const std::vector<Token> & terminators, const std::vector<Token> & forbidden) {
    const Candidates c = candidates(logits, history, terminators, forbidden);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    double target = uniform(rng_);
    // Walk in token-id order so a seed gives the same token whatever order the candidates were ranked in.
    std::vector<size_t> by_id(c.ids.size());
    std::iota(by_id.begin(), by_id.end(), 0);
    std::sort(by_id.begin(), by_id.end(), [&](size_t a, size_t b) { return c.ids[a] < c.ids[b]; });
    for (size_t i : by_id) {
        target -= c.probs[i];
        if (target < 0.0) return c.ids[i];
    }
    return c.ids[by_id.back()];  // rounding left a sliver of probability: take the last candidate
}

}  // namespace omni

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
// (plus any tied with the last of them) are ranked, which avoids sorting the whole vocabulary every token.
std::vector<int> ranked_candidates(const std::vector<float> & logits, int limit) {
    std::vector<int> order;
    order.reserve(logits.size());
    for (int i = 0; i < static_cast<int>(logits.size()); ++i) {
        if (logits[static_cast<size_t>(i)] != kNegInf) {
            order.push_back(i);
        }
    }
    const auto better = [&](int a, int b) {
        const float la = logits[static_cast<size_t>(a)];
        const float lb = logits[static_cast<size_t>(b)];
        return la != lb ? la > lb : a < b;
    };
    if (limit > 0 && static_cast<size_t>(limit) < order.size()) {
        std::nth_element(order.begin(), order.begin() + (limit - 1), order.end(), better);
        const float kth = logits[static_cast<size_t>(order[static_cast<size_t>(limit) - 1])];
        // Ties with the k-th value survive, as in the reference top-k warper.
        const auto tail = std::partition(order.begin() + limit, order.end(),
                                         [&](int i) { return logits[static_cast<size_t>(i)] >= kth; });
        order.erase(tail, order.end());
    }
    std::sort(order.begin(), order.end(), better);
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

std::vector<float> Sampler::probabilities(const std::vector<float> & logits, const std::vector<Token> & history,
                                          const std::vector<Token> & terminators,
                                          const std::vector<Token> & forbidden) const {
    std::vector<float> scaled = penalised_logits(logits, history, terminators, forbidden);
    std::vector<float> probs(scaled.size(), 0.0f);
    const bool greedy = params_.temperature <= 0.0f;
    std::vector<int> ranked = ranked_candidates(scaled, greedy ? 1 : params_.top_k);
    if (ranked.empty()) {
        throw EngineError("every token is forbidden; nothing can be sampled");
    }
    if (greedy) {
        probs[static_cast<size_t>(ranked.front())] = 1.0f;
        return probs;
    }
    for (int id : ranked) {
        scaled[static_cast<size_t>(id)] /= params_.temperature;
    }
    std::vector<double> p = softmax_of(scaled, ranked);
    if (params_.top_p < 1.0f) {
        // Keep the most likely tokens up to and including the one whose cumulative probability reaches top_p.
        double cumulative = 0.0;
        size_t keep = 0;
        while (keep < p.size()) {
            cumulative += p[keep++];
            if (cumulative >= params_.top_p) break;
        }
        ranked.resize(keep);
        p = softmax_of(scaled, ranked);
    }
    if (params_.min_p > 0.0f) {
        const double floor = p.front() * params_.min_p;
        size_t keep = 1;
        while (keep < p.size() && p[keep] >= floor) ++keep;
        ranked.resize(keep);
        p = softmax_of(scaled, ranked);
    }
    for (size_t i = 0; i < ranked.size(); ++i) {
        probs[static_cast<size_t>(ranked[i])] = static_cast<float>(p[i]);
    }
    return probs;
}

Token Sampler::sample(const std::vector<float> & logits, const std::vector<Token> & history,
                      const std::vector<Token> & terminators, const std::vector<Token> & forbidden) {
    const std::vector<float> probs = probabilities(logits, history, terminators, forbidden);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    double target = uniform(rng_);
    Token last_nonzero = -1;
    for (size_t i = 0; i < probs.size(); ++i) {
        if (probs[i] <= 0.0f) continue;
        last_nonzero = static_cast<Token>(i);
        target -= probs[i];
        if (target < 0.0) return last_nonzero;
    }
    return last_nonzero;  // rounding left a sliver of probability: take the last candidate
}

}  // namespace omni

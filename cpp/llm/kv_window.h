// The KV sliding window of pipeline.md §6.5, as a plan: which span of the conversation to drop.
#pragma once

#include <vector>

namespace omni {

struct DropSpan {
    int begin = 0;  // first position to drop
    int end = 0;    // one past the last; begin == end means nothing can be dropped
};

// n_keep: protected system prompt length; n_past: current length; round_starts: ascending start positions
// of the completed rounds after n_keep (each round runs to the next start; the last one to `open_round_start`,
// where the current, unfinished round begins). Keeps the newest complete rounds whose total length is at most
// max_preserved and drops everything between n_keep and the oldest kept round. When no whole round can be
// dropped, drops the older half of [n_keep, n_past).
DropSpan plan_slide(int n_keep, int n_past, const std::vector<int> & round_starts, int open_round_start,
                    int max_preserved);

}  // namespace omni

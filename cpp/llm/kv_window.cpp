#include "llm/kv_window.h"

#include <cstddef>

namespace omni {

DropSpan plan_slide(int n_keep, int n_past, const std::vector<int> & round_starts, int open_round_start,
                    int max_preserved) {
    DropSpan span{n_keep, n_keep};
    // Walk the complete rounds from the newest back, keeping as many as fit in max_preserved.
    int kept_from = open_round_start;
    for (int i = static_cast<int>(round_starts.size()) - 1; i >= 0; --i) {
        const int start = round_starts[static_cast<size_t>(i)];
        if (open_round_start - start > max_preserved) break;
        kept_from = start;
    }
    if (kept_from > n_keep) {
        span.end = kept_from;
        return span;
    }
    const int half = (n_past - n_keep) / 2;
    span.end = n_keep + half;
    return span;
}

}  // namespace omni

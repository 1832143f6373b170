#include "llm/utf8.h"

namespace omni {
namespace {

constexpr const char * kReplacement = "\xEF\xBF\xBD";

// Length of the UTF-8 sequence that starts with `lead`, or 0 if `lead` cannot start one.
size_t sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

std::string Utf8Accumulator::push(const std::string & bytes) {
    pending_ += bytes;
    std::string out;
    size_t i = 0;
    while (i < pending_.size()) {
        const size_t len = sequence_length(static_cast<unsigned char>(pending_[i]));
        if (len == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        if (i + len > pending_.size()) {
            // Possibly unfinished: keep it if what we have so far is a valid beginning.
            bool valid_start = true;
            for (size_t j = i + 1; j < pending_.size(); ++j) {
                valid_start = valid_start && is_continuation(static_cast<unsigned char>(pending_[j]));
            }
            if (valid_start) break;
            out += kReplacement;
            ++i;
            continue;
        }
        bool valid = true;
        for (size_t j = 1; j < len; ++j) {
            valid = valid && is_continuation(static_cast<unsigned char>(pending_[i + j]));
        }
        if (!valid) {
            out += kReplacement;
            ++i;
            continue;
        }
        out.append(pending_, i, len);
        i += len;
    }
    pending_.erase(0, i);
    return out;
}

std::string Utf8Accumulator::flush() {
    std::string out = pending_.empty() ? "" : kReplacement;
    pending_.clear();
    return out;
}

}  // namespace omni

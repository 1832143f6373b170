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

bool is_continuation(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

// The second byte's range is narrower after some lead bytes (no overlong forms, no surrogates, <= U+10FFFF).
bool valid_second_byte(unsigned char lead, unsigned char c) {
    switch (lead) {
        case 0xE0: return c >= 0xA0 && c <= 0xBF;
        case 0xED: return c >= 0x80 && c <= 0x9F;
        case 0xF0: return c >= 0x90 && c <= 0xBF;
        case 0xF4: return c >= 0x80 && c <= 0x8F;
        default: return is_continuation(c);
    }
}

}  // namespace

// Invalid input becomes one U+FFFD per maximal invalid subpart, as Python's errors="replace" does.
std::string Utf8Accumulator::push(const std::string & bytes) {
    pending_ += bytes;
    std::string out;
    size_t i = 0;
    while (i < pending_.size()) {
        const auto lead = static_cast<unsigned char>(pending_[i]);
        const size_t len = sequence_length(lead);
        if (len == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        size_t have = 1;
        while (have < len && i + have < pending_.size()) {
            const auto c = static_cast<unsigned char>(pending_[i + have]);
            if (!(have == 1 ? valid_second_byte(lead, c) : is_continuation(c))) break;
            ++have;
        }
        if (have == len) {
            out.append(pending_, i, len);
            i += len;
        } else if (i + have == pending_.size()) {
            break;  // unfinished: wait for the next piece
        } else {
            out += kReplacement;
            i += have;
        }
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

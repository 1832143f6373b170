// Joins token pieces into text that never splits a UTF-8 sequence; invalid bytes become U+FFFD.
#pragma once

#include <string>

namespace omni {

class Utf8Accumulator {
public:
    // Adds bytes; returns the text that is complete so far (possibly empty).
    std::string push(const std::string & bytes);
    // Returns whatever is left at the end of a stream (an unfinished sequence becomes U+FFFD).
    std::string flush();

private:
    std::string pending_;
};

}  // namespace omni

// Typed engine errors. Messages always name the file, key, tensor or field concerned.
#pragma once

#include <stdexcept>
#include <string>

namespace omni {

class EngineError : public std::runtime_error {
public:
    explicit EngineError(const std::string & message) : std::runtime_error(message) {}
};

// A model file is missing, unreadable or does not have the expected layout.
class ModelFileError : public EngineError {
public:
    explicit ModelFileError(const std::string & message) : EngineError(message) {}
};

// The call is valid but not now (e.g. a prefill while an answer is being generated).
class BusyError : public EngineError {
public:
    explicit BusyError(const std::string & message) : EngineError(message) {}
};

// The call is out of order (e.g. a prefill before a session exists) or a setting is invalid.
class StateError : public EngineError {
public:
    explicit StateError(const std::string & message) : EngineError(message) {}
};

// The conversation cannot make room for more tokens (even after sliding the window).
class ContextFullError : public StateError {
public:
    explicit ContextFullError(const std::string & message) : StateError(message) {}
};

}  // namespace omni

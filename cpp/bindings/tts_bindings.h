// Python classes of the TTS stage: TtsSamplingParams, TtsSampler, Tts, SpeechGenerator, and the pure helpers
// (is_tts_valid, SpeechTokenGrouper) in `internals`.
#pragma once

#include <pybind11/pybind11.h>

namespace omni_bindings {

void bind_tts_options(pybind11::module_ & m);
void bind_tts(pybind11::module_ & m, pybind11::module_ & internals);

}  // namespace omni_bindings

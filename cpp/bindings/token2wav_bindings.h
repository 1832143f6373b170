// Python classes of the Token2Wav stage: Token2Mel (encoder + flow matching), HiftVocoder and Token2Wav (the
// streamed speech decoder).
#pragma once

#include <pybind11/pybind11.h>

namespace omni_bindings {

void bind_token2mel(pybind11::module_ & m);
void bind_vocoder(pybind11::module_ & m);

}  // namespace omni_bindings

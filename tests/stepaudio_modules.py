"""Import the Token2Wav reference modules of `stepaudio2-minicpmo==0.1.1` without its heavy extras.

The package's `__init__` imports `token2wav.py`, which pulls s3tokenizer, torchaudio, onnxruntime and
hyperpyyaml (none needed for the flow and vocoder modules). token2wav.md §8.1: register a bare package
module whose search path is the installed package directory, so submodules import without running
`__init__`, and a placeholder `onnxruntime` (imported but unused by flow_matching.py) with a valid module
spec, because torch's dynamo inspects module specs. The encoder's dynamo hooks are disabled as well.

Install the reference with `pip install --no-deps stepaudio2-minicpmo==0.1.1 einops` (its declared
dependencies would pull several GB of audio tooling the parity tests do not use).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types

import pytest

PACKAGE = "stepaudio2"


def _register_bare_package() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "the Token2Wav reference is not installed: "
            "pip install --no-deps stepaudio2-minicpmo==0.1.1 einops"
        )
    locations = list(spec.submodule_search_locations)
    package = types.ModuleType(PACKAGE)
    package.__path__ = locations
    package.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    package.__spec__.submodule_search_locations = locations
    sys.modules[PACKAGE] = package


def _register_onnxruntime_placeholder() -> None:
    if "onnxruntime" in sys.modules or importlib.util.find_spec("onnxruntime") is not None:
        return
    placeholder = types.ModuleType("onnxruntime")
    placeholder.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None)
    sys.modules["onnxruntime"] = placeholder


def load_reference() -> types.SimpleNamespace:
    """The reference classes: encoder, DiT, CFM, flow, HiFT generator and its F0 predictor."""
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    _register_bare_package()
    _register_onnxruntime_placeholder()
    from stepaudio2.cosyvoice2.flow.decoder_dit import DiT
    from stepaudio2.cosyvoice2.flow.flow import CausalMaskedDiffWithXvec
    from stepaudio2.cosyvoice2.flow.flow_matching import CausalConditionalCFM
    from stepaudio2.cosyvoice2.transformer.upsample_encoder_v2 import UpsampleConformerEncoderV2
    from stepaudio2.flashcosyvoice.modules.hifigan import ConvRNNF0Predictor, HiFTGenerator

    return types.SimpleNamespace(
        UpsampleConformerEncoderV2=UpsampleConformerEncoderV2,
        DiT=DiT,
        CausalConditionalCFM=CausalConditionalCFM,
        CausalMaskedDiffWithXvec=CausalMaskedDiffWithXvec,
        HiFTGenerator=HiFTGenerator,
        ConvRNNF0Predictor=ConvRNNF0Predictor,
    )

"""PyTorch side of the vocoder parity tests: the reference non-causal HiFT of stepaudio2-minicpmo 0.1.1
(token2wav.md §3.7, vocoder A) loaded from a `hifigan2.gguf`, and SA's streaming around it (§5.4).

Public API (the end-to-end Token2Wav test imports the first two):

- `load_hift(model_dir: Path) -> torch.nn.Module`: `HiFTGenerator(base_channels=C,
  f0_predictor=ConvRNNF0Predictor(cond_channels=F))` with C and F read from
  `model_dir/token2wav-gguf/hifigan2.gguf` (32 and 16 for the tiny files), the file's tensors loaded strictly
  (weight norm: g = ||W|| over all dims but dim 0, v = W), eval mode, float32.
- `stream_vocode(hift, mel_chunks: Sequence[np.ndarray], finals: Sequence[bool], noise: bool = False)
  -> list[np.ndarray]`: the vocoder part of SA's `Token2wav.stream` over (80, n) float32 mel chunks
  (8-frame mel cache, 3840-sample source cache, 3840-sample Hamming cross-fade, the last 3840 samples held
  back unless final); returns the float32 PCM each call emits. A final call ends the stream: the next chunk
  starts a new one. The NSF noise is zeroed unless `noise`.
- `vocode(hift, mel, source_prefix=None, noise=False) -> VocoderOutput`: one call (pcm, excitation, f0).
- `nsf_noise_off()`: context manager that zeroes the NSF noise (SineGen2 draws it with `torch.randn_like`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from gguf import GGUFReader
from stepaudio_modules import load_reference

from omni_app.tiny_models.token2wav import HIFIGAN_FILE

CACHED_FRAMES = 8
OVERLAP = CACHED_FRAMES * 480  # samples of source cache, speech cache and each cross-fade half
WEIGHT_NORM_G = ".parametrizations.weight.original0"
WEIGHT_NORM_V = ".parametrizations.weight.original1"


@dataclass(frozen=True)
class VocoderOutput:
    pcm: np.ndarray  # (480 T,)
    source: np.ndarray  # (480 T,) excitation actually used
    f0: np.ndarray  # (T,) Hz


def hifigan_path(model_dir: Path) -> Path:
    return Path(model_dir) / HIFIGAN_FILE


def _file_tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data, dtype=np.float32) for t in GGUFReader(path).tensors}


def _state_dict(
    model: torch.nn.Module, tensors: dict[str, np.ndarray]
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The module's state dict filled from the file's folded tensors, and the file names it used."""
    state, used = {}, set()
    for key in model.state_dict():
        if key.endswith(WEIGHT_NORM_G) or key.endswith(WEIGHT_NORM_V):
            name = key[: -len(WEIGHT_NORM_G)] + ".weight"
            weight = torch.from_numpy(tensors[name])
            if key.endswith(WEIGHT_NORM_G):
                dims = tuple(range(1, weight.dim()))
                state[key] = torch.linalg.vector_norm(weight, dim=dims, keepdim=True)
            else:
                state[key] = weight
        else:
            name = key
            state[key] = torch.from_numpy(tensors[name])
        used.add(name)
    return state, used


def load_hift(model_dir: Path) -> torch.nn.Module:
    """The reference HiFT with the weights of `model_dir`'s hifigan2.gguf (see the module docstring)."""
    reference = load_reference()
    tensors = _file_tensors(hifigan_path(model_dir))
    base_channels = tensors["conv_pre.weight"].shape[0]
    f0_channels = tensors["f0_predictor.condnet.0.weight"].shape[0]
    hift = reference.HiFTGenerator(
        base_channels=base_channels, f0_predictor=reference.ConvRNNF0Predictor(cond_channels=f0_channels)
    )
    state, used = _state_dict(hift, tensors)
    unused = set(tensors) - used
    if unused:
        raise ValueError(f"hifigan2.gguf tensors the reference has no place for: {sorted(unused)}")
    hift.load_state_dict(state, strict=True)
    return hift.float().eval()


@contextlib.contextmanager
def nsf_noise_off() -> Iterator[None]:
    """Zero the NSF noise: SineGen2.forward multiplies `torch.randn_like(...)` by the noise amplitude."""
    with mock.patch.object(torch, "randn_like", torch.zeros_like):
        yield


def _noise_context(noise: bool) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext() if noise else nsf_noise_off()


def _run(
    hift: torch.nn.Module, mel: torch.Tensor, cache_source: torch.Tensor, noise: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    with _noise_context(noise):
        speech, source = hift(mel, cache_source)
    return speech, source


def vocode(
    hift: torch.nn.Module, mel: np.ndarray, source_prefix: np.ndarray | None = None, noise: bool = False
) -> VocoderOutput:
    """One non-causal call on mel (80, T), the excitation's first samples overwritten by `source_prefix`."""
    speech_feat = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None]
    prefix = np.zeros(0, np.float32) if source_prefix is None else source_prefix
    speech, source = _run(hift, speech_feat, torch.from_numpy(prefix.astype(np.float32))[None, None], noise)
    with torch.inference_mode():
        f0 = hift.f0_predictor(speech_feat)
    return VocoderOutput(pcm=speech[0].numpy(), source=source[0, 0].numpy(), f0=f0[0].numpy())


def _cross_fade(speech: torch.Tensor, cached: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """SA's fade_in_out: the float64 window promotes the sum, stored back into the float32 speech."""
    faded = speech.clone()
    half = window.shape[0] // 2
    faded[..., :half] = speech[..., :half] * window[:half] + cached[..., -half:] * window[half:]
    return faded


@dataclass
class _StreamState:
    mel: torch.Tensor
    source: torch.Tensor
    speech: torch.Tensor

    @staticmethod
    def empty() -> _StreamState:
        return _StreamState(torch.zeros(1, 80, 0), torch.zeros(1, 1, 0), torch.zeros(1, 0))


def stream_vocode(
    hift: torch.nn.Module, mel_chunks: Sequence[np.ndarray], finals: Sequence[bool], noise: bool = False
) -> list[np.ndarray]:
    """The PCM emitted for each (80, n) chunk by SA's streaming vocoder (see the module docstring)."""
    window = torch.from_numpy(np.hamming(2 * OVERLAP))
    state = _StreamState.empty()
    emitted = []
    for chunk, final in zip(mel_chunks, finals, strict=True):
        mel = torch.cat([state.mel, torch.from_numpy(np.asarray(chunk, dtype=np.float32))[None]], dim=2)
        if mel.shape[2] == 0:
            emitted.append(np.zeros(0, np.float32))
            continue
        speech, source = _run(hift, mel, state.source, noise)
        if state.speech.shape[-1] > 0:
            speech = _cross_fade(speech, state.speech, window)
        if final:
            emitted.append(speech[0].numpy().astype(np.float32))
            state = _StreamState.empty()
            continue
        state = _StreamState(mel[..., -CACHED_FRAMES:], source[:, :, -OVERLAP:], speech[:, -OVERLAP:])
        emitted.append(speech[0, :-OVERLAP].numpy().astype(np.float32))
    return emitted

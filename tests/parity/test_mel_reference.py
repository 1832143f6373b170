"""The NumPy mel reference (tests/audio_reference.py, pipeline.md §4.1 steps 2-5) against independent
computations of the same definition, so that it can serve as the truth for the engine's mel frontend:

- librosa: `librosa.stft` (center=False on the signal padded as §4.1 says: 200 reflected samples before,
  200 zeros after) + `librosa.feature.melspectrogram` with librosa's own Slaney bank; rel <= 1e-5
  (measured ~8e-9; rel = max|ref - other| / max|other|).
- librosa's own centering (center=True, reflect) for every frame that does not reach the end padding:
  checks the start convention without padding by hand.
- transformers `WhisperFeatureExtractor` (the PyTorch chat path: zero padding to 30 s, then reflect
  centering, last frame dropped, its own mel bank): equal on the clip's frames when the clip ends in >= 200
  zeros of the 100 ms padding (then WFE's extra frames are silence and do not move the clip max). WFE casts
  the samples to float32 (the reference gets the same float32 samples) and computes partly in float32: in the
  deep spectral valleys of tones and harmonics (7 decades below the peak) that moves the normalised log-mel
  by up to 3.6e-5 (measured; 2.5e-6 for noise), hence rel <= 1e-4 there. A float32 engine frontend can
  expect errors of that size against the float64 reference on such signals.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pytest
from audio_reference import (
    librosa_mel,
    mel_filters_from_gguf,
    mel_frames,
    pad_to_unit,
    power_spectrogram,
    reference_mel,
)
from transformers import WhisperFeatureExtractor

RATE = 16000
LIBROSA_TOLERANCE = 1e-5
WFE_TOLERANCE = 1e-4  # float32 inside WFE; measured max 3.6e-5 (chirp), see the docstring
# 0.05 s, 1 s, the default reference voice length (6.016 s), 10 s, and a length that is no multiple of 1600.
LENGTHS = [800, 16000, 96256, 160000, 12345]


def _time(n: int) -> np.ndarray:
    return np.arange(n) / RATE


def _noise(n: int) -> np.ndarray:
    return 0.1 * np.random.default_rng(n).standard_normal(n)


def _chirp(n: int) -> np.ndarray:
    t = _time(n)
    duration = max(n / RATE, 1e-3)
    return 0.5 * np.sin(2 * np.pi * (100 * t + (7900 - 100) / (2 * duration) * t**2))


def _voiced(n: int) -> np.ndarray:
    """Speech-like: 120 Hz harmonics shaped by two formants, 4 Hz syllable envelope, silent edges."""
    t = _time(n)
    harmonics = np.arange(1, 60)
    frequencies = 120.0 * harmonics
    gains = np.exp(-(((frequencies - 700) / 300) ** 2)) + 0.5 * np.exp(-(((frequencies - 1200) / 400) ** 2))
    signal = np.sin(2 * np.pi * np.outer(t, frequencies)) @ (gains / harmonics**0.5)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (t > 0.02) * (t < t[-1] - 0.02)
    return 0.3 * signal * envelope


def _clicks(n: int) -> np.ndarray:
    signal = np.zeros(n)
    signal[::997] = 0.9
    return signal


def _quiet(n: int) -> np.ndarray:
    return 1e-4 * np.random.default_rng(n + 1).standard_normal(n)


def _silence_then_tone(n: int) -> np.ndarray:
    """Half silence: the max - 8 clamp decides every silent frame."""
    return np.where(_time(n) < n / RATE / 2, 0.0, 0.8 * np.sin(2 * np.pi * 1000 * _time(n)))


SIGNALS: dict[str, Callable[[int], np.ndarray]] = {
    "noise": _noise,
    "chirp": _chirp,
    "voiced": _voiced,
    "clicks": _clicks,
    "quiet": _quiet,
    "silence_then_tone": _silence_then_tone,
}


def _rel(value: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(value - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", list(SIGNALS))
def test_reference_matches_librosa(name: str, length: int) -> None:
    pcm = SIGNALS[name](length)
    mel = reference_mel(pcm)
    assert mel.shape == (80, mel_frames(length))
    assert _rel(mel, librosa_mel(pcm)) <= LIBROSA_TOLERANCE


@pytest.mark.parametrize("name", ["noise", "chirp"])
def test_start_padding_is_librosa_reflect_centering(name: str) -> None:
    samples = pad_to_unit(SIGNALS[name](16000))
    power = power_spectrogram(samples)
    centred = (
        np.abs(
            librosa.stft(samples, n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
        )
        ** 2
    )
    # Frame k covers original samples [160k - 200, 160k + 200): the last two frames reach the end padding.
    untouched = samples.size // 160 - 1
    assert centred.shape[1] == power.shape[1] + 1
    assert _rel(power[:, :untouched], centred[:, :untouched]) <= 1e-12
    # The last kept frame sees the zeros of §4.1, not librosa's reflection (the signals are loud at the end).
    assert _rel(power[:, untouched:], centred[:, untouched : power.shape[1]]) > 1e-3


@pytest.mark.parametrize("length", [800, 15000, 95000, 158000])  # each ends in >= 200 padding zeros
@pytest.mark.parametrize("name", ["noise", "chirp", "voiced", "silence_then_tone"])
def test_reference_matches_whisper_feature_extractor(name: str, length: int) -> None:
    pcm = SIGNALS[name](length).astype(np.float32)
    assert pad_to_unit(pcm).size - length >= 200
    mel = reference_mel(pcm)
    features = WhisperFeatureExtractor()(pcm, sampling_rate=RATE, return_tensors="np")
    assert _rel(mel, features.input_features[0][:, : mel.shape[1]]) <= WFE_TOLERANCE


@pytest.mark.parametrize(
    ("samples", "frames"), [(0, 10), (1, 10), (800, 10), (1600, 10), (1601, 20), (16000, 100), (96256, 610)]
)
def test_frame_count_follows_the_100ms_padding(samples: int, frames: int) -> None:
    assert mel_frames(samples) == frames
    assert reference_mel(_noise(samples)).shape == (80, frames)


def test_silence_and_dynamic_range() -> None:
    np.testing.assert_array_equal(reference_mel(np.zeros(3200)), np.full((80, 20), (-10 + 4) / 4))
    mel = reference_mel(_silence_then_tone(32000))
    assert mel.max() - mel.min() == pytest.approx(2.0, abs=1e-12)  # 8 log10 units / 4
    assert np.count_nonzero(mel == mel.min()) > 80 * 50  # the silent half sits at the clamp


def test_gguf_filters_give_the_same_mel(tiny_model_dir: Path) -> None:
    filters = mel_filters_from_gguf(tiny_model_dir / "audio/MiniCPM-o-4_5-audio-F16.gguf")
    pcm = _voiced(16000)
    np.testing.assert_array_equal(reference_mel(pcm, filters), reference_mel(pcm))

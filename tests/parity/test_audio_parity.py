"""The audio stage (`omni_engine.AudioEncoder`) against its references on the tiny audio file:
- mel frontend vs a NumPy implementation of pipeline.md §4.1 (tests/audio_reference.py, itself checked
  against librosa in test_mel_reference.py): rel <= 1e-4;
- encoder + projector + AvgPool(5) vs the PyTorch model of the same architecture (transformers Whisper
  encoder layers, exact GELU) holding the same weights, fed the same mel: rel <= 1e-3.
Error measure: ||engine - reference||_2 / ||reference||_2 over the whole output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from audio_reference import (
    audio_rows,
    mel_filters_from_gguf,
    reference_audio_embeddings,
    reference_audio_model,
)
from audio_reference import reference_mel as reference_mel_of

import omni_engine

MEL_TOLERANCE = 1e-4
ENCODER_TOLERANCE = 1e-3
N_GPU_LAYERS = int(os.environ.get("OMNI_TEST_N_GPU_LAYERS", "0"))
RATE = 16000


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    n = int(round(seconds * RATE))
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    if kind == "tone":
        x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    elif kind == "chirp":
        x = 0.5 * np.sin(2 * np.pi * (100 + 1900 * t / max(seconds, 1e-3)) * t)
    elif kind == "noise":
        x = 0.2 * rng.standard_normal(n)
    else:  # bursts of noise in silence, like syllables
        x = 0.3 * rng.standard_normal(n) * (np.sin(2 * np.pi * 4 * t) > 0.3)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def audio_path(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / "audio" / "MiniCPM-o-4_5-audio-F16.gguf"


@pytest.fixture(scope="module")
def encoder(audio_path: Path) -> omni_engine.AudioEncoder:
    return omni_engine.AudioEncoder(str(audio_path), use_gpu=N_GPU_LAYERS != 0, n_threads=2)


@pytest.fixture(scope="module")
def reference(audio_path: Path):
    return reference_audio_model(audio_path)


@pytest.fixture(scope="module")
def filters(audio_path: Path) -> np.ndarray:
    return mel_filters_from_gguf(audio_path)


@pytest.mark.parametrize("kind", ["tone", "chirp", "noise", "bursts"])
@pytest.mark.parametrize("seconds", [0.05, 1.0, 6.016, 10.0, 12345 / RATE])
def test_mel_matches_reference(encoder, filters, kind: str, seconds: float) -> None:
    pcm = signal(kind, seconds)
    ours = encoder.mel(pcm)
    ref = reference_mel_of(pcm.astype(np.float64), filters)
    assert ours.shape == ref.shape
    error = rel_error(ours, ref)
    assert error <= MEL_TOLERANCE, f"mel rel error {error:.3e}"


@pytest.mark.parametrize("seconds", [0.05, 1.0, 6.0, 10.0])
def test_encoder_matches_pytorch(encoder, reference, filters, seconds: float) -> None:
    mel = reference_mel_of(signal("bursts", seconds).astype(np.float64), filters).astype(np.float32)
    ours = encoder.encode_mel(mel)
    ref = reference_audio_embeddings(reference, mel)
    assert ours.shape == ref.shape == (audio_rows(mel.shape[1]), encoder.n_embd_out)
    error = rel_error(ours, ref)
    assert error <= ENCODER_TOLERANCE, f"encoder rel error {error:.3e} over {ours.shape[0]} rows"


@pytest.mark.parametrize(("seconds", "rows"), [(0.05, 1), (1.0, 10), (6.016, 61), (10.0, 100)])
def test_rows_per_second_follow_the_reference_table(encoder, seconds: float, rows: int) -> None:
    assert encoder.encode(signal("tone", seconds)).shape == (rows, encoder.n_embd_out)


def test_whole_clip_equals_pytorch_from_pcm(encoder, reference, filters) -> None:
    pcm = signal("chirp", 3.3)
    mel = reference_mel_of(pcm.astype(np.float64), filters).astype(np.float32)
    ref = reference_audio_embeddings(reference, mel)
    assert rel_error(encoder.encode(pcm), ref) <= ENCODER_TOLERANCE


def test_wrong_mel_shape_is_refused(encoder) -> None:
    with pytest.raises(ValueError, match=r"mel must have shape \(80, frames\)"):
        encoder.encode_mel(np.zeros((40, 100), dtype=np.float32))


def chunk_mels(filters: np.ndarray, seconds: list[float]) -> list[np.ndarray]:
    return [
        reference_mel_of(signal("bursts", s, seed=i).astype(np.float64), filters).astype(np.float32)
        for i, s in enumerate(seconds)
    ]


@pytest.mark.parametrize(
    "seconds",
    [
        [1.0, 1.0, 1.0],  # duplex-like 1 s units
        [1.035, 1.0, 0.5, 2.7],  # the reference's 1035 ms first chunk, then uneven lengths
        [0.05, 0.3, 1.2],
        [12.0, 12.0, 9.0],  # crosses the 1500-position table: the third chunk starts a new stream
    ],
)
def test_chunked_encoding_matches_pytorch_streaming(encoder, reference, filters, seconds: list) -> None:
    from audio_reference import reference_streaming_embeddings

    mels = chunk_mels(filters, seconds)
    expected = reference_streaming_embeddings(reference, mels)
    encoder.reset_stream()
    for i, (mel, ref) in enumerate(zip(mels, expected, strict=True)):
        ours = encoder.encode_chunk_mel(mel)
        assert ours.shape == ref.shape, f"chunk {i}"
        error = rel_error(ours, ref)
        assert error <= ENCODER_TOLERANCE, f"chunk {i} of {seconds}: rel error {error:.3e}"


def test_stream_positions_and_reset(encoder, filters) -> None:
    mels = chunk_mels(filters, [1.0, 1.5])
    encoder.reset_stream()
    first = encoder.encode_chunk_mel(mels[0])
    assert encoder.cached_positions == 50
    second = encoder.encode_chunk_mel(mels[1])
    assert encoder.cached_positions == 50 + 75
    alone = encoder.encode_mel(mels[1])
    assert rel_error(second, alone) > 0.05  # the cache and the position offset change the result
    encoder.reset_stream()
    np.testing.assert_array_equal(encoder.encode_chunk_mel(mels[0]), first)


# Exact configuration: the F32 audio file, computed in F32 throughout (measured 1.9e-7). The bound is tight
# enough to tell the reference's exact erf GELU from the tanh approximation the C++ reference uses (4.7e-5).
EXACT_TOLERANCE = 1e-5
# On CUDA ggml runs F32 matrix products through cuBLAS in TF32 (10-bit mantissa; measured 2.0e-4 on the H100),
# so the GPU run of the same graph is held to the production bound; the erf/tanh distinction is the CPU's job.
EXACT_TOLERANCE_ON_GPU = 1e-3


@pytest.fixture(scope="module")
def exact_audio_path(tiny_model_dir_f32: Path) -> Path:
    return tiny_model_dir_f32 / "audio" / "MiniCPM-o-4_5-audio-F16.gguf"


@pytest.mark.parametrize("seconds", [1.0, 6.0])
def test_exact_configuration_matches_pytorch(exact_audio_path: Path, seconds: float) -> None:
    encoder = omni_engine.AudioEncoder(str(exact_audio_path), use_gpu=N_GPU_LAYERS != 0, n_threads=2)
    reference = reference_audio_model(exact_audio_path)
    filters = mel_filters_from_gguf(exact_audio_path)
    mel = reference_mel_of(signal("bursts", seconds).astype(np.float64), filters).astype(np.float32)
    error = rel_error(encoder.encode_mel(mel), reference_audio_embeddings(reference, mel))
    bound = EXACT_TOLERANCE if N_GPU_LAYERS == 0 else EXACT_TOLERANCE_ON_GPU
    assert error <= bound, f"exact-configuration rel error {error:.3e}"


def test_exact_bound_separates_erf_from_tanh_gelu(exact_audio_path: Path) -> None:
    import copy

    import torch

    reference = reference_audio_model(exact_audio_path)
    tanh_reference = copy.deepcopy(reference)
    swapped = 0
    for module in tanh_reference.modules():
        if hasattr(module, "activation_fn"):
            module.activation_fn = torch.nn.GELU(approximate="tanh")
            swapped += 1
    assert swapped == 2  # the two tiny layers
    filters = mel_filters_from_gguf(exact_audio_path)
    mel = reference_mel_of(signal("bursts", 1.0).astype(np.float64), filters).astype(np.float32)
    expected = reference_audio_embeddings(reference, mel)
    gap = rel_error(reference_audio_embeddings(tanh_reference, mel), expected)
    assert gap > 3 * EXACT_TOLERANCE, f"tanh vs erf GELU only {gap:.3e} apart"


def speech_16k(path: Path) -> np.ndarray:
    from omni_app.audio import decode_audio  # the server's decoder: soundfile + librosa soxr_hq to 16 kHz

    return decode_audio(path.read_bytes(), max_seconds=60)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_speech_through_mel_and_encoder(encoder, reference, filters, espeak_speech, language: str) -> None:
    pcm = speech_16k(espeak_speech[language])
    assert len(pcm) > RATE  # over a second of speech
    mel = reference_mel_of(pcm.astype(np.float64), filters)
    assert rel_error(encoder.mel(pcm), mel) <= MEL_TOLERANCE
    mel = mel.astype(np.float32)
    ours = encoder.encode_mel(mel)
    assert ours.shape == (audio_rows(mel.shape[1]), encoder.n_embd_out)
    assert rel_error(ours, reference_audio_embeddings(reference, mel)) <= ENCODER_TOLERANCE

"""omni_engine.HiftVocoder (C++/ggml, CPU) against the PyTorch HiFT of stepaudio2-minicpmo 0.1.1 loaded with
the same tiny hifigan2.gguf: one-shot synthesis (token2wav.md §3.7), the §5.4 stream, the NSF noise and
argument errors. The NSF noise is off on both sides unless a test says otherwise.

Measured on the tiny files (CPU): F0 relative error <= 2e-7; excitation SNR 94-160 dB (the F0 differs in the
last bit, which the phase accumulation amplifies); PCM SNR 106-121 dB with max |error| <= 5e-7 one-shot,
105 dB and 7e-7 over a 6-call stream. The gates leave a wide margin and stay far above the issue's 40 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter
from vocoder_reference import OVERLAP, hifigan_path, load_hift, stream_vocode, vocode

import omni_engine

SAMPLES_PER_FRAME = 480
F0_RTOL = 1e-5
SOURCE_SNR_DB = 75.0
PCM_SNR_DB = 90.0
PCM_MAX_ABS = 1e-5
NOISY_PCM_SNR_DB = 40.0  # noise on vs off: the NSF noise is small next to the harmonics


def log_mel(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Log-mel values in the range of real speech features: N(-5, 2), clipped to [ln(1e-5), 2]."""
    return np.clip(rng.normal(-5.0, 2.0, (80, frames)), -11.5, 2.0).astype(np.float32)


def snr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    error = np.sum((actual.astype(np.float64) - expected) ** 2)
    return float(10.0 * np.log10(np.sum(expected.astype(np.float64) ** 2) / max(error, 1e-30)))


@pytest.fixture(scope="module")
def model_path(tiny_model_dir: Path) -> str:
    return str(hifigan_path(tiny_model_dir))


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> torch.nn.Module:
    return load_hift(tiny_model_dir)


@pytest.fixture(scope="module")
def vocoder(model_path: str) -> omni_engine.HiftVocoder:
    return omni_engine.HiftVocoder(model_path, add_noise=False)


@pytest.mark.parametrize("frames", [1, 8, 50, 58])
def test_synthesize_matches_reference(
    vocoder: omni_engine.HiftVocoder, reference: torch.nn.Module, frames: int
) -> None:
    rng = np.random.default_rng(frames)
    mel = log_mel(rng, frames)
    prefix = np.tanh(rng.normal(0.0, 0.3, min(OVERLAP, SAMPLES_PER_FRAME * frames // 2))).astype(np.float32)
    expected = vocode(reference, mel, prefix)

    pcm, source = vocoder.synthesize(mel, prefix)

    assert pcm.dtype == np.float32 and pcm.shape == (SAMPLES_PER_FRAME * frames,)
    assert source.dtype == np.float32 and source.shape == (SAMPLES_PER_FRAME * frames,)
    assert np.array_equal(source[: len(prefix)], prefix)
    assert np.abs(pcm).max() <= 0.99
    np.testing.assert_allclose(vocoder.f0(mel), expected.f0, rtol=F0_RTOL)
    assert expected.f0.min() > 100.0  # voiced everywhere: the harmonic branch is exercised
    assert snr_db(source, expected.source) >= SOURCE_SNR_DB
    assert snr_db(pcm, expected.pcm) >= PCM_SNR_DB
    assert np.abs(pcm - expected.pcm).max() <= PCM_MAX_ABS


def test_source_prefix_reaches_the_decoder(
    vocoder: omni_engine.HiftVocoder, reference: torch.nn.Module
) -> None:
    rng = np.random.default_rng(3)
    mel = log_mel(rng, 20)
    prefix = np.tanh(rng.normal(0.0, 0.5, OVERLAP)).astype(np.float32)

    plain, _ = vocoder.synthesize(mel)
    primed, _ = vocoder.synthesize(mel, prefix)

    assert snr_db(plain, primed) < 30.0  # the overwritten excitation changes the audio ...
    assert snr_db(plain, vocode(reference, mel).pcm) >= PCM_SNR_DB  # ... as it does in the reference
    assert snr_db(primed, vocode(reference, mel, prefix).pcm) >= PCM_SNR_DB


def test_stream_matches_reference(vocoder: omni_engine.HiftVocoder, reference: torch.nn.Module) -> None:
    rng = np.random.default_rng(5)
    final_tokens = 7
    chunks = [log_mel(rng, 50) for _ in range(5)] + [log_mel(rng, 2 * final_tokens)]
    finals = [False] * 5 + [True]
    expected = stream_vocode(reference, chunks, finals)

    vocoder.stream_reset()
    emitted = [vocoder.stream_feed(chunk, final) for chunk, final in zip(chunks, finals, strict=True)]

    lengths = [20160, 24000, 24000, 24000, 24000, SAMPLES_PER_FRAME * (8 + 2 * final_tokens)]
    assert [len(pcm) for pcm in emitted] == lengths
    assert [len(pcm) for pcm in expected] == lengths
    assert snr_db(np.concatenate(emitted), np.concatenate(expected)) >= PCM_SNR_DB
    assert np.abs(np.concatenate(emitted) - np.concatenate(expected)).max() <= PCM_MAX_ABS
    assert vocoder.stream_cached_frames == 0  # the final call ended the stream ...
    assert np.array_equal(vocoder.stream_feed(chunks[0], False), emitted[0])  # ... so this starts a new one
    vocoder.stream_reset()


@pytest.mark.parametrize(
    ("frames", "lengths"),
    [
        ((6,), [2880]),  # a stream that is one short final window
        ((50, 0), [20160, 3840]),  # a final call without frames re-vocodes the cached 8 and emits them
    ],
)
def test_stream_edges_match_reference(
    vocoder: omni_engine.HiftVocoder, reference: torch.nn.Module, frames: tuple[int, ...], lengths: list[int]
) -> None:
    rng = np.random.default_rng(11)
    chunks = [log_mel(rng, n) for n in frames]
    finals = [False] * (len(chunks) - 1) + [True]
    expected = stream_vocode(reference, chunks, finals)

    vocoder.stream_reset()
    emitted = [vocoder.stream_feed(chunk, final) for chunk, final in zip(chunks, finals, strict=True)]

    assert [len(pcm) for pcm in emitted] == lengths == [len(pcm) for pcm in expected]
    assert snr_db(np.concatenate(emitted), np.concatenate(expected)) >= PCM_SNR_DB


def test_stream_reset_restarts_the_stream(vocoder: omni_engine.HiftVocoder) -> None:
    rng = np.random.default_rng(13)
    first, second = log_mel(rng, 50), log_mel(rng, 50)
    vocoder.stream_reset()
    opening = vocoder.stream_feed(first, False)
    vocoder.stream_feed(second, False)
    assert vocoder.stream_cached_frames == 8

    vocoder.stream_reset()

    assert vocoder.stream_cached_frames == 0
    assert np.array_equal(vocoder.stream_feed(first, False), opening)
    vocoder.stream_reset()


def test_nsf_noise(model_path: str, vocoder: omni_engine.HiftVocoder, reference: torch.nn.Module) -> None:
    mel = log_mel(np.random.default_rng(17), 58)
    quiet_pcm, quiet_source = vocoder.synthesize(mel)
    noisy = omni_engine.HiftVocoder(model_path, add_noise=True, noise_seed=11)
    same_seed = omni_engine.HiftVocoder(model_path, add_noise=True, noise_seed=11)
    other_seed = omni_engine.HiftVocoder(model_path, add_noise=True, noise_seed=12)

    first, first_source = noisy.synthesize(mel)
    second, _ = noisy.synthesize(mel)

    assert np.array_equal(first, same_seed.synthesize(mel)[0])  # deterministic for a seed
    assert not np.array_equal(first, second)  # fresh noise at every call, like the reference
    assert not np.array_equal(first, other_seed.synthesize(mel)[0])
    assert not np.array_equal(first, quiet_pcm)
    assert snr_db(first, quiet_pcm) >= NOISY_PCM_SNR_DB
    torch.manual_seed(0)
    reference_spread = np.std(vocode(reference, mel, noise=True).source - vocode(reference, mel).source)
    assert np.std(first_source - quiet_source) == pytest.approx(reference_spread, rel=0.2)


@pytest.mark.parametrize(
    "mel",
    [
        np.zeros((79, 10), np.float32),
        np.zeros((80, 0), np.float32),
        np.zeros((80, 10), np.float64),
        np.zeros(800, np.float32),
        np.zeros((1, 80, 10), np.float32),
    ],
    ids=["rows", "no-frames", "float64", "1-d", "3-d"],
)
def test_bad_mel_is_rejected(vocoder: omni_engine.HiftVocoder, mel: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"^mel must be a float32 array of shape \(80, frames\)"):
        vocoder.synthesize(mel)
    with pytest.raises(ValueError, match=r"^mel must be"):
        vocoder.f0(mel)


def test_bad_source_prefix_is_rejected(vocoder: omni_engine.HiftVocoder) -> None:
    mel = np.zeros((80, 2), np.float32)
    with pytest.raises(ValueError, match="^source_prefix has 961 samples, more than the mel's 960$"):
        vocoder.synthesize(mel, np.zeros(961, np.float32))
    with pytest.raises(ValueError, match="^source_prefix must be a 1-D float32 array or None$"):
        vocoder.synthesize(mel, np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="^source_prefix must be a 1-D float32 array or None$"):
        vocoder.synthesize(mel, np.zeros(10, np.float64))


def test_bad_stream_chunks_are_rejected(vocoder: omni_engine.HiftVocoder) -> None:
    vocoder.stream_reset()
    with pytest.raises(ValueError, match=r"^mel: a non-final chunk needs at least 1 frame and 8 frames"):
        vocoder.stream_feed(np.zeros((80, 4), np.float32), False)
    with pytest.raises(ValueError, match=r"^mel: a non-final chunk needs at least 1 frame"):
        vocoder.stream_feed(np.zeros((80, 0), np.float32), False)
    with pytest.raises(
        ValueError, match=r"^mel must be a float32 array of shape \(80, frames\) with frames >= 0"
    ):
        vocoder.stream_feed(np.zeros((80, 4), np.float64), True)
    assert vocoder.stream_cached_frames == 0
    assert len(vocoder.stream_feed(np.zeros((80, 0), np.float32), True)) == 0  # an empty stream emits nothing


def test_missing_file_and_tensor_are_model_file_errors(tmp_path: Path, model_path: str) -> None:
    with pytest.raises(omni_engine.ModelFileError, match="nowhere.gguf"):
        omni_engine.HiftVocoder(str(tmp_path / "nowhere.gguf"))
    broken = tmp_path / "hifigan2.gguf"
    writer = GGUFWriter(broken, "")
    for tensor in GGUFReader(model_path).tensors:
        if tensor.name != "resblocks.4.convs2.1.bias":
            writer.add_tensor(tensor.name, np.array(tensor.data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(omni_engine.ModelFileError, match="missing tensor 'resblocks.4.convs2.1.bias'"):
        omni_engine.HiftVocoder(str(broken))

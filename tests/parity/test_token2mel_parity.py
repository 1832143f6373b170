"""`omni_engine.Token2Mel` (token encoder + DiT + CFM, streaming) against the PyTorch flow of
stepaudio2-minicpmo 0.1.1 (tests/flow_reference.py) on the tiny Token2Wav files, with the engine's own noise
buffer in the reference's CFM and the reference started from the same prompt cache.

Error measure: rel = max|engine - reference| / max|reference| over the whole tensor (mel of one window, or
one cache). Streams: 3 x 4218 then random speech tokens in windows of 28 with stride 25 (token2wav.md §5.1),
ending with a short last window (7 tokens) or a full one (28 tokens).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from flow_reference import (
    CACHE_NAMES,
    SILENCE_TOKEN,
    WINDOW_TOKENS,
    PromptCache,
    Window,
    WindowResult,
    build_flow,
    load_prompt_caches,
    prompt_cache_path,
    reference_windows,
    stream_windows,
    t2w_dir,
    trim_caches_sa,
    write_sharpened_encoder,
)
from numeric_helpers import max_rel_error

import omni_engine
from omni_app.tiny_models.token2wav import (
    ENCODER_FILE,
    FLOW_EXTRA_FILE,
    FLOW_MATCHING_FILE,
    N_MELS,
    N_SPEECH_CODES,
    PROMPT_CACHE_FILE,
    TOKEN2WAV_DIR,
)

USE_GPU = int(os.environ.get("OMNI_TEST_N_GPU_LAYERS", "0")) != 0
ENGINE_THREADS = 2
TOKEN_SEED = 5
# 6 non-final windows then a last window of 7 tokens (4 new); 2 non-final windows then a full last window.
SHORT_LAST_STREAM = 3 + 25 * 6 + 4
FULL_LAST_STREAM = 3 + 25 * 2 + 25
# fp32 throughout, 10 Euler steps with CFG. Measured on the CPU (2 threads): mel <= 4.2e-7 per window, caches
# <= 1.1e-6 (all three streams). The brief's gate is 1e-3, but with these weights a 1 % error in encoder_proj
# moves the mel by only 2.5e-3, dropping the positional term by 1e-4 and SA's trimming rule by 1.2e-3, so the
# CPU bound is 1e-5. On CUDA ggml runs F32 products in TF32 (10-bit mantissa): the stage's 1e-3 there.
MEL_TOLERANCE = 1e-3 if USE_GPU else 1e-5
# The caches hold q/k-normed keys (values O(1)) after 10 steps of TF32 products: 1.06e-3 measured on an H100
# (mel 2-3e-4 there), hence 2e-3 for the caches on a GPU.
CACHE_TOLERANCE = 2e-3 if USE_GPU else 1e-5
# What dropping the (sharpened) encoder's positional term does to the mel at least (measured 3.1e-3).
POSITIONS_MATTER = 1e-3
NOISE_SAMPLES = N_MELS * 30000


@dataclass
class EngineWindow:
    mel: np.ndarray
    caches: dict[str, np.ndarray]
    lengths_before: tuple[int, int]  # (conformer L, estimator L) when the window started
    lengths_after: tuple[int, int]


@dataclass
class StreamRun:
    windows: list[Window]
    engine: list[EngineWindow]
    reference: list[WindowResult]


def speech_tokens(n: int, seed: int = TOKEN_SEED) -> list[int]:
    return np.random.default_rng(seed).integers(0, N_SPEECH_CODES, n).tolist()


def stream(n_stream_tokens: int) -> list[int]:
    return [SILENCE_TOKEN] * 3 + speech_tokens(n_stream_tokens - 3)


def run_engine(token2mel: omni_engine.Token2Mel, windows: list[Window]) -> list[EngineWindow]:
    token2mel.reset()
    results = []
    for tokens, last in windows:
        before = tuple(token2mel.cache_lengths)
        mel = np.asarray(token2mel.feed(tokens, last))
        caches = {name: np.asarray(array) for name, array in token2mel.caches().items()}
        results.append(EngineWindow(mel, caches, before, tuple(token2mel.cache_lengths)))
    return results


@pytest.fixture(scope="module")
def t2w_path(tiny_model_dir: Path) -> Path:
    return t2w_dir(tiny_model_dir)


@pytest.fixture(scope="module")
def token2mel(t2w_path: Path) -> omni_engine.Token2Mel:
    return omni_engine.Token2Mel(str(t2w_path), use_gpu=USE_GPU, n_threads=ENGINE_THREADS)


@pytest.fixture(scope="module")
def prompt(tiny_model_dir: Path) -> PromptCache:
    return load_prompt_caches(prompt_cache_path(tiny_model_dir))


@pytest.fixture(scope="module")
def flow(tiny_model_dir: Path, token2mel: omni_engine.Token2Mel, prompt: PromptCache) -> torch.nn.Module:
    return build_flow(tiny_model_dir, np.asarray(token2mel.noise), prompt.n_timesteps)


@pytest.fixture(scope="module")
def sharp_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("sharp_token2wav")
    write_sharpened_encoder(tiny_model_dir, out_dir)
    return out_dir


@pytest.fixture(scope="module")
def sharp_flow(sharp_dir: Path, token2mel: omni_engine.Token2Mel, prompt: PromptCache) -> torch.nn.Module:
    return build_flow(sharp_dir, np.asarray(token2mel.noise), prompt.n_timesteps)


def run_stream(
    token2mel: omni_engine.Token2Mel, flow: torch.nn.Module, prompt: PromptCache, windows: list[Window]
) -> StreamRun:
    return StreamRun(windows, run_engine(token2mel, windows), reference_windows(flow, prompt, windows))


@pytest.fixture(scope="module")
def short_last(token2mel: omni_engine.Token2Mel, flow: torch.nn.Module, prompt: PromptCache) -> StreamRun:
    return run_stream(token2mel, flow, prompt, stream_windows(stream(SHORT_LAST_STREAM)))


@pytest.fixture(scope="module")
def full_last(token2mel: omni_engine.Token2Mel, flow: torch.nn.Module, prompt: PromptCache) -> StreamRun:
    windows = stream_windows(stream(FULL_LAST_STREAM), last_max=WINDOW_TOKENS)
    return run_stream(token2mel, flow, prompt, windows)


@pytest.fixture(scope="module")
def sharp_encoder(sharp_dir: Path, sharp_flow: torch.nn.Module, prompt: PromptCache) -> StreamRun:
    """The short-last stream on the sharpened-encoder directory (engine default noise seed = token2mel's)."""
    engine = omni_engine.Token2Mel(str(t2w_dir(sharp_dir)), use_gpu=USE_GPU, n_threads=ENGINE_THREADS)
    return run_stream(engine, sharp_flow, prompt, stream_windows(stream(SHORT_LAST_STREAM)))


SCENARIOS = ["short_last", "full_last", "sharp_encoder"]


def assert_prompt_caches(token2mel: omni_engine.Token2Mel, prompt: PromptCache) -> None:
    caches = token2mel.caches()
    assert sorted(caches) == sorted(CACHE_NAMES)
    for name in CACHE_NAMES:
        expected = prompt.caches[name].numpy()
        actual = np.asarray(caches[name])
        assert actual.dtype == np.float32, name
        assert actual.shape == expected.shape, name
        assert np.array_equal(actual, expected), name
    p = prompt.prompt_frames
    assert tuple(token2mel.cache_lengths) == (p, p)


# --- the stream layouts ------------------------------------------------------------------------------------


def test_windows_of_the_streams() -> None:
    short = stream_windows(stream(SHORT_LAST_STREAM))
    assert [(len(tokens), last) for tokens, last in short] == [(28, False)] * 6 + [(7, True)]
    full = stream_windows(stream(FULL_LAST_STREAM), last_max=WINDOW_TOKENS)
    assert [(len(tokens), last) for tokens, last in full] == [(28, False)] * 2 + [(28, True)]
    assert short[1][0][:3] == short[0][0][25:]  # the 3 lookahead tokens are sent again


def test_properties_match_the_prompt_cache(token2mel: omni_engine.Token2Mel, prompt: PromptCache) -> None:
    assert token2mel.n_timesteps == prompt.n_timesteps == 10
    assert token2mel.prompt_frames == prompt.prompt_frames == 8


def test_caches_after_construction_are_the_prompt_caches(t2w_path: Path, prompt: PromptCache) -> None:
    fresh = omni_engine.Token2Mel(str(t2w_path), use_gpu=USE_GPU, n_threads=ENGINE_THREADS)
    assert_prompt_caches(fresh, prompt)


def test_reset_restores_the_prompt_caches(token2mel: omni_engine.Token2Mel, prompt: PromptCache) -> None:
    run_engine(token2mel, stream_windows(stream(FULL_LAST_STREAM))[:3])
    assert token2mel.cache_lengths[1] > prompt.prompt_frames
    token2mel.reset()
    assert_prompt_caches(token2mel, prompt)


# --- streaming parity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_mel_per_window_matches_the_reference(scenario: str, request: pytest.FixtureRequest) -> None:
    run: StreamRun = request.getfixturevalue(scenario)
    expected_frames = [2 * (len(tokens) if last else len(tokens) - 3) for tokens, last in run.windows]
    assert [r.mel.shape for r in run.reference] == [(N_MELS, n) for n in expected_frames]
    errors = [max_rel_error(e.mel, r.mel) for e, r in zip(run.engine, run.reference, strict=True)]
    assert max(errors) <= MEL_TOLERANCE, f"mel rel error per window: {[f'{e:.2e}' for e in errors]}"


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", CACHE_NAMES)
def test_caches_after_every_window_match_the_reference(
    scenario: str, name: str, request: pytest.FixtureRequest
) -> None:
    run: StreamRun = request.getfixturevalue(scenario)
    errors = [
        max_rel_error(e.caches[name], r.caches[name]) for e, r in zip(run.engine, run.reference, strict=True)
    ]
    assert max(errors) <= CACHE_TOLERANCE, f"{name} rel error per window: {[f'{e:.2e}' for e in errors]}"


def test_positions_matter_in_the_sharpened_encoder(
    sharp_encoder: StreamRun, sharp_flow: torch.nn.Module, prompt: PromptCache
) -> None:
    """The reference itself: without its relative-position term the sharpened encoder gives another mel, so
    the parity above covers the engine's positional attention."""
    positionless = copy.deepcopy(sharp_flow)
    with torch.no_grad():
        for name, parameter in positionless.named_parameters():
            if "linear_pos" in name:
                parameter.zero_()
    changed = reference_windows(positionless, prompt, sharp_encoder.windows)
    errors = [max_rel_error(c.mel, r.mel) for c, r in zip(changed, sharp_encoder.reference, strict=True)]
    assert min(errors) > POSITIONS_MATTER, errors


def test_cache_lengths_and_noise_offsets(short_last: StreamRun, prompt: PromptCache) -> None:
    p = prompt.prompt_frames
    offsets = [p, p + 50, p + 100, p + 100, p + 100, p + 100, p + 100]
    assert [r.noise_offset for r in short_last.reference] == offsets
    assert [e.lengths_before for e in short_last.engine] == [(n, n) for n in offsets]
    # the last window (7 tokens = 14 frames) is appended and not trimmed
    after = [(n, n) for n in offsets[1:]] + [(p + 114, p + 114)]
    assert [e.lengths_after for e in short_last.engine] == after


def test_stepaudio_trimming_agrees_on_windows_1_to_3_only(
    short_last: StreamRun, flow: torch.nn.Module, prompt: PromptCache
) -> None:
    """SA 0.1.1 keeps the first P and the last 100 entries of the newest-first estimator cache (the newest P
    generated frames + older ones) where the engine keeps prompt + newest 100 (t2w_api.md). The first trim
    happens after window 3, so both rules give the same windows 1-3; from window 4 on the engine follows its
    own rule, not SA's."""
    sa = reference_windows(flow, prompt, short_last.windows, trim=trim_caches_sa)
    ours = short_last.reference
    for window in range(3):
        assert np.array_equal(sa[window].mel, ours[window].mel)
        assert max_rel_error(short_last.engine[window].mel, sa[window].mel) <= MEL_TOLERANCE
    sa_cache, our_cache = sa[2].caches["estimator_att_cache"], ours[2].caches["estimator_att_cache"]
    assert sa_cache.shape == our_cache.shape and max_rel_error(sa_cache, our_cache) > 0.1
    engine_vs_ours = max_rel_error(short_last.engine[3].mel, ours[3].mel)
    engine_vs_sa = max_rel_error(short_last.engine[3].mel, sa[3].mel)
    # 10x apart on the CPU; on a GPU the engine's own TF32 error is 2e-4 against SA's 1.2e-3 (measured).
    assert engine_vs_sa > (3 if USE_GPU else 10) * engine_vs_ours, (engine_vs_sa, engine_vs_ours)


# --- noise -------------------------------------------------------------------------------------------------


def noise_of(t2w_path: Path, seed: int) -> np.ndarray:
    return np.asarray(omni_engine.Token2Mel(str(t2w_path), noise_seed=seed).noise)


def test_noise_is_deterministic_per_seed(t2w_path: Path, token2mel: omni_engine.Token2Mel) -> None:
    default = np.asarray(token2mel.noise)
    assert default.shape == (N_MELS, 30000) and default.dtype == np.float32
    assert np.array_equal(noise_of(t2w_path, 0), default)
    assert np.array_equal(noise_of(t2w_path, 7), noise_of(t2w_path, 7))


def test_noise_differs_across_seeds(t2w_path: Path) -> None:
    first, second = noise_of(t2w_path, 1), noise_of(t2w_path, 2)
    assert np.mean(first == second) < 1e-3
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.01


def test_noise_is_standard_normal(token2mel: omni_engine.Token2Mel) -> None:
    noise = np.asarray(token2mel.noise, dtype=np.float64).ravel()
    assert noise.size == NOISE_SAMPLES
    # 2.4 M samples: the standard errors of the mean and of the std are 6.5e-4 and 4.6e-4.
    assert abs(noise.mean()) < 5e-3
    assert abs(noise.std() - 1.0) < 5e-3
    assert abs(np.mean(np.abs(noise) < 1.0) - 0.6827) < 3e-3  # Gaussian, not uniform
    assert np.isfinite(noise).all()


# --- errors ------------------------------------------------------------------------------------------------


def test_n_timesteps_other_than_the_cache_value_is_rejected(t2w_path: Path) -> None:
    with pytest.raises(ValueError, match="n_timesteps"):
        omni_engine.Token2Mel(str(t2w_path), n_timesteps=5)
    assert omni_engine.Token2Mel(str(t2w_path), n_timesteps=10).n_timesteps == 10


@pytest.mark.parametrize(
    ("tokens", "last"),
    [
        ([SILENCE_TOKEN] * 27 + [N_SPEECH_CODES], False),
        ([-1] + [SILENCE_TOKEN] * 6, True),
        ([SILENCE_TOKEN] * 3, False),
        ([], True),
    ],
    ids=["id_6561", "negative_id", "three_tokens_non_final", "empty_final"],
)
def test_invalid_tokens_are_rejected_without_changing_the_state(
    token2mel: omni_engine.Token2Mel, prompt: PromptCache, tokens: list[int], last: bool
) -> None:
    token2mel.reset()
    with pytest.raises(ValueError, match="tokens"):
        token2mel.feed(tokens, last)
    assert_prompt_caches(token2mel, prompt)


@pytest.mark.parametrize("relpath", [ENCODER_FILE, FLOW_MATCHING_FILE, FLOW_EXTRA_FILE, PROMPT_CACHE_FILE])
def test_missing_file_names_the_path(tiny_model_dir: Path, tmp_path: Path, relpath: Path) -> None:
    shutil.copytree(tiny_model_dir / TOKEN2WAV_DIR, tmp_path / TOKEN2WAV_DIR)
    missing = tmp_path / relpath
    missing.unlink()
    with pytest.raises(omni_engine.ModelFileError, match=re.escape(str(missing))):
        omni_engine.Token2Mel(str(tmp_path / TOKEN2WAV_DIR))

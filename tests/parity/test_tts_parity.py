"""The TTS stage (`omni_engine.Tts`, `TtsSampler`, `SpeechGenerator`, `internals.SpeechTokenGrouper`) against
its references (tests/tts_reference.py): a transformers `LlamaModel` holding the tiny TTS file's weights (q/k
rows brought back to the HF layout) with the semantic projector and the heads in torch, computed in float64;
and a NumPy sampler written from the contract's definition (tts_api.md, pipeline.md §7.3).

Error measure: per row, rel = ||engine - reference||_2 / ||reference||_2; the tests bound the maximum over
rows. The reference itself is checked first: it holds exactly the writer's HF-layout weights (the rope
permutation undone, the weight norm folded as the writer folds it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tts_reference import (
    AUDIO_BOS_ID,
    EOS_CODE,
    TEXT_EOS_ID,
    SamplerSettings,
    code_rows,
    condition_rows,
    cumulative_probabilities,
    reference_choose,
    reference_condition,
    reference_greedy,
    reference_logits,
    reference_process,
    reference_tts_model,
    softmax,
    text_rows,
)

import omni_engine
from omni_app.tiny_models.tts import fold_weight_norm, random_weights

N_GPU_LAYERS = int(os.environ.get("OMNI_TEST_N_GPU_LAYERS", "0"))
USE_GPU = N_GPU_LAYERS != 0
ENGINE_THREADS = 1  # the tiny model gains nothing from more threads on the 2 CI cores
TTS = "tts/MiniCPM-o-4_5-tts-F16.gguf"
PROJECTOR = "tts/MiniCPM-o-4_5-projector-F16.gguf"
N_LLM_EMBD, N_EMBD, N_CODES = 128, 64, 6562

# F32 projector and tables in both files; measured 1.1e-7 (CPU). On CUDA ggml runs F32 matrix products in TF32
# (10-bit mantissa): measured 2.7e-4 on the H100, so the GPU bound is the stage's 1e-3.
CONDITION_TOLERANCE = 1e-3 if USE_GPU else 1e-5
# Logits of 32 rows (12 condition rows + 20 codes), measured on the CPU: max 4.9e-4 (mean 2.8e-4) with the
# F16 file (activations rounded to F16 in the F16 matrix products), 3.0e-7 with the F32 file. On CUDA ggml
# runs F32 products in TF32 (the audio stage measured 2e-4 there), so the F32 file gets the F16 bound there.
LOGITS_TOLERANCE = {"f16": 1e-3, "f32": 1e-3 if USE_GPU else 1e-5}
# One row at a time after a 12-row prefill vs one pass, measured on the CPU: 1.7e-7 (F16 file), 3.1e-7 (F32
# file). CUDA picks other kernels per batch shape (matrix-vector vs TF32 cuBLAS): measured 1.08e-3 (F16 file)
# on the H100.
INCREMENTAL_TOLERANCE = {"f16": 2e-3 if USE_GPU else 1e-4, "f32": 2e-3 if USE_GPU else 1e-5}
# The last row alone vs the same row among all rows: the same arithmetic on the CPU (bit-equal); on CUDA a
# different kernel for one output row (measured 2.6e-4 relative per element on the H100).
LAST_ROW_TOLERANCE = 1e-3 if USE_GPU else 0.0
PROCESS_TOLERANCE = 1e-6


def rel_rows(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)


def chunk_inputs(n: int, seed: int) -> tuple[list[int], np.ndarray]:
    """n LLM token ids (TTS-valid range) and n LLM hidden rows of unit scale, like post-norm hidden states."""
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in rng.integers(0, 150000, n)]
    return ids, rng.standard_normal((n, N_LLM_EMBD)).astype(np.float32)


@pytest.fixture(scope="module", params=["f16", "f32"])
def variant(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tiny_model_dir_f32: Path
) -> tuple[str, Path]:
    return request.param, tiny_model_dir if request.param == "f16" else tiny_model_dir_f32


@pytest.fixture(scope="module")
def tts(variant: tuple[str, Path]) -> omni_engine.Tts:
    _, model_dir = variant
    return omni_engine.Tts(
        str(model_dir / TTS), str(model_dir / PROJECTOR), use_gpu=USE_GPU, n_threads=ENGINE_THREADS
    )


@pytest.fixture(scope="module")
def reference(variant: tuple[str, Path]):
    return reference_tts_model(variant[1] / TTS)


@pytest.fixture(scope="module")
def exact_reference(tiny_model_dir_f32: Path):
    return reference_tts_model(tiny_model_dir_f32 / TTS)


# ---- the reference itself -------------------------------------------------------------------------


def test_reference_holds_the_writers_hf_weights(exact_reference) -> None:
    hf = random_weights(seed=0)
    attention = exact_reference.backbone.layers[1].self_attn
    for module, name in ((attention.q_proj, "q_proj"), (attention.k_proj, "k_proj")):
        expected = hf[f"model.layers.1.self_attn.{name}.weight"]
        np.testing.assert_array_equal(module.weight.detach().numpy(), expected)
    mlp = exact_reference.backbone.layers[0].mlp
    np.testing.assert_array_equal(
        mlp.down_proj.weight.detach().numpy(), hf["model.layers.0.mlp.down_proj.weight"]
    )
    folded = fold_weight_norm(
        hf["head_code.0.parametrizations.weight.original0"],
        hf["head_code.0.parametrizations.weight.original1"],
    )
    np.testing.assert_array_equal(exact_reference.head_code.numpy(), folded.astype(np.float64))
    config = exact_reference.backbone.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 2)
    eps = float(np.float32(1e-6))  # the file's float32 key
    assert (config.intermediate_size, config.num_key_value_heads, config.rms_norm_eps) == (128, 2, eps)
    assert exact_reference.backbone.rotary_emb.inv_freq[1].item() == pytest.approx(10000.0 ** (-2 / 32))


def test_reference_projector_file_and_tts_file_agree(tiny_model_dir: Path, exact_reference) -> None:
    from_projector_file = reference_tts_model(tiny_model_dir / TTS, projector_path=tiny_model_dir / PROJECTOR)
    ids, hidden = chunk_inputs(5, seed=3)
    np.testing.assert_array_equal(
        reference_condition(from_projector_file, ids, hidden),
        reference_condition(exact_reference, ids, hidden),
    )


# ---- properties, tables, condition ----------------------------------------------------------------


def test_properties(tts: omni_engine.Tts) -> None:
    assert (tts.n_embd, tts.n_llm_embd, tts.n_layer, tts.n_head) == (N_EMBD, N_LLM_EMBD, 2, 2)
    assert (tts.n_codes, tts.eos_code, tts.projector_source) == (N_CODES, EOS_CODE, "projector file")
    assert tts.n_ctx == 4096
    assert (tts.backend == "CPU") != USE_GPU


def test_text_and_code_embeddings_are_the_file_rows(tts: omni_engine.Tts, reference) -> None:
    ids = [0, 271, AUDIO_BOS_ID, TEXT_EOS_ID, 151747, 152063]
    np.testing.assert_array_equal(tts.text_embedding(ids), text_rows(reference, ids).astype(np.float32))
    codes = [0, 1, 4218, 6560, EOS_CODE]
    np.testing.assert_array_equal(tts.code_embedding(codes), code_rows(reference, codes).astype(np.float32))


def test_empty_inputs_give_empty_rows(tts: omni_engine.Tts) -> None:
    empty_hidden = np.zeros((0, N_LLM_EMBD), dtype=np.float32)
    assert tts.text_embedding([]).shape == (0, N_EMBD)
    assert tts.code_embedding([]).shape == (0, N_EMBD)
    assert tts.condition([], empty_hidden).shape == (0, N_EMBD)


def test_bad_inputs_are_refused_with_their_reason(tts: omni_engine.Tts) -> None:
    with pytest.raises(
        omni_engine.EngineError, match=r"TTS text id 152064 is outside emb_text \(152064 rows\)"
    ):
        tts.text_embedding([152064])
    with pytest.raises(omni_engine.EngineError, match=r"speech code 6562 is outside emb_code \(6562 rows\)"):
        tts.code_embedding([6562])
    with pytest.raises(ValueError, match=r"hidden must have shape \(2, 128\)"):
        tts.condition([1, 2], np.zeros((3, N_LLM_EMBD), dtype=np.float32))
    with pytest.raises(ValueError, match=r"rows must have shape \(n, 64\)"):
        tts.forward(np.zeros((2, 63), dtype=np.float32))
    with pytest.raises(omni_engine.EngineError, match="TTS forward needs at least one row"):
        tts.forward(np.zeros((0, N_EMBD), dtype=np.float32))


@pytest.mark.parametrize("n", [1, 10, 37])
def test_condition_matches_torch(tts: omni_engine.Tts, reference, n: int) -> None:
    ids, hidden = chunk_inputs(n, seed=n)
    ours = tts.condition(ids, hidden)
    expected = reference_condition(reference, ids, hidden)
    assert ours.shape == (n, N_EMBD) and ours.dtype == np.float32
    errors = rel_rows(ours, expected)
    assert errors.max() <= CONDITION_TOLERANCE, f"condition rel error max {errors.max():.3e}"


def test_condition_from_the_tts_files_projector(variant: tuple[str, Path], reference) -> None:
    tts = omni_engine.Tts(str(variant[1] / TTS), use_gpu=USE_GPU, n_threads=ENGINE_THREADS)
    assert tts.projector_source == "tts file"
    ids, hidden = chunk_inputs(10, seed=11)
    errors = rel_rows(tts.condition(ids, hidden), reference_condition(reference, ids, hidden))
    assert errors.max() <= CONDITION_TOLERANCE


def test_condition_of_scaled_hidden_is_scale_free(tts: omni_engine.Tts, reference) -> None:
    """The projected part is L2-normalised; the projector's biases make it depend on the scale, the
    reference says by how much."""
    ids, hidden = chunk_inputs(4, seed=5)
    for scale in (1e-3, 30.0):
        errors = rel_rows(
            tts.condition(ids, hidden * scale), reference_condition(reference, ids, hidden * scale)
        )
        assert errors.max() <= CONDITION_TOLERANCE, f"scale {scale}: {errors.max():.3e}"


# ---- forward --------------------------------------------------------------------------------------

N_PREFIX_CODES = 20


@pytest.fixture(scope="module")
def parity_rows(reference) -> np.ndarray:
    """10 merged rows + text-EOS + audio-BOS + 20 speech codes (random, EOS excluded): 32 rows."""
    ids, hidden = chunk_inputs(10, seed=1)
    codes = [int(c) for c in np.random.default_rng(2).integers(0, EOS_CODE, N_PREFIX_CODES)]
    rows = np.concatenate([condition_rows(reference, ids, hidden, last=True), code_rows(reference, codes)])
    return rows.astype(np.float32)


def test_all_logits_match_torch(tts: omni_engine.Tts, reference, variant, parity_rows: np.ndarray) -> None:
    tts.clear()
    ours = tts.forward(parity_rows, all_logits=True)
    assert ours.shape == (len(parity_rows), N_CODES) and tts.n_past == len(parity_rows)
    errors = rel_rows(ours, reference_logits(reference, parity_rows))
    bound = LOGITS_TOLERANCE[variant[0]]
    assert errors.max() <= bound, f"logits rel error max {errors.max():.3e}, mean {errors.mean():.3e}"


def test_last_row_logits_and_clear(tts: omni_engine.Tts, parity_rows: np.ndarray) -> None:
    tts.clear()
    assert tts.n_past == 0
    every = tts.forward(parity_rows, all_logits=True)
    tts.clear()
    last = tts.forward(parity_rows)
    assert last.shape == (N_CODES,) and tts.n_past == len(parity_rows)
    np.testing.assert_allclose(last, every[-1], rtol=LAST_ROW_TOLERANCE, atol=LAST_ROW_TOLERANCE)


def test_incremental_forward_equals_one_pass(tts: omni_engine.Tts, variant, parity_rows: np.ndarray) -> None:
    tts.clear()
    one_pass = tts.forward(parity_rows, all_logits=True)
    tts.clear()
    prefix = 12
    steps = [tts.forward(parity_rows[:prefix], all_logits=True)]
    for index in range(prefix, len(parity_rows)):
        steps.append(tts.forward(parity_rows[index : index + 1], all_logits=True))
        assert tts.n_past == index + 1
    errors = rel_rows(np.concatenate(steps), one_pass)
    assert errors.max() <= INCREMENTAL_TOLERANCE[variant[0]], f"incremental vs one pass {errors.max():.3e}"


def test_positions_matter(tts: omni_engine.Tts, reference, parity_rows: np.ndarray) -> None:
    """The same rows after a different prefix give other logits (the KV cache and rope are in play)."""
    tts.clear()
    tts.forward(parity_rows[:5])
    shifted = tts.forward(parity_rows[12:], all_logits=True)
    expected = reference_logits(reference, np.concatenate([parity_rows[:5], parity_rows[12:]]))[5:]
    tts.clear()
    fresh = tts.forward(parity_rows[12:], all_logits=True)
    assert rel_rows(shifted, expected).max() <= 1e-3
    assert rel_rows(fresh, shifted).min() > 0.01


# ---- greedy speech generation ---------------------------------------------------------------------

N_GREEDY = 50


def greedy_params() -> omni_engine.TtsSamplingParams:
    return omni_engine.TtsSamplingParams(
        temperature=0.0, repetition_penalty=1.0, max_tokens_per_chunk=N_GREEDY
    )


def test_greedy_codes_equal_the_reference(tts: omni_engine.Tts, reference) -> None:
    """Two chunks of one turn, 50 argmax codes each, on both files. The inputs (seeds 22/1003) were picked
    for clear argmaxes and no EOS within 50 codes: the smallest top-2 logit gap along the two reference
    sequences is 0.044 / 0.051, against logit errors of ~1e-3 for the F16 file (other seeds have gaps below
    1e-3, where F16 rounding could flip a code)."""
    generator = omni_engine.SpeechGenerator(tts, greedy_params())
    generator.start_turn()
    ids1, hidden1 = chunk_inputs(10, seed=22)
    first_condition = condition_rows(reference, ids1, hidden1, last=False)
    expected1 = reference_greedy(reference, first_condition, N_GREEDY)
    assert len(expected1) == N_GREEDY  # no EOS among the first 50 argmaxes for this condition
    assert generator.speak_chunk(ids1, hidden1, last=False) == expected1
    assert generator.position == len(first_condition) + N_GREEDY
    # The second chunk continues the turn's KV cache: the reference recomputes the whole sequence.
    ids2, hidden2 = chunk_inputs(6, seed=1003)
    history = np.concatenate(
        [
            first_condition,
            code_rows(reference, expected1),
            condition_rows(reference, ids2, hidden2, last=True),
        ]
    )
    expected2 = reference_greedy(reference, history, N_GREEDY)
    assert len(expected2) == N_GREEDY and expected2 != expected1
    assert generator.speak_chunk(ids2, hidden2, last=True) == expected2
    assert generator.position == len(history) + N_GREEDY


def test_greedy_chunk_stops_at_eos(tts: omni_engine.Tts, reference) -> None:
    """Seed 128 (3 ids) makes the reference's 10th argmax the EOS code (margin 1.09; smallest top-2 gap
    before it 0.11): 9 codes come back, EOS is neither returned nor fed."""
    generator = omni_engine.SpeechGenerator(tts, greedy_params())
    generator.start_turn()
    ids, hidden = chunk_inputs(3, seed=128)
    condition = condition_rows(reference, ids, hidden, last=True)
    expected = reference_greedy(reference, condition, N_GREEDY)
    assert len(expected) == 9
    assert generator.speak_chunk(ids, hidden, last=True) == expected
    assert generator.position == 3 + 2 + 9


# ---- sampler --------------------------------------------------------------------------------------


def engine_params(**overrides: float) -> omni_engine.TtsSamplingParams:
    return omni_engine.TtsSamplingParams(**overrides)


def settings_of(params: omni_engine.TtsSamplingParams) -> SamplerSettings:
    """The reference settings with the engine's stored (float32) values, so both divide by the same number."""
    return SamplerSettings(
        temperature=params.temperature,
        repetition_penalty=params.repetition_penalty,
        penalty_window=params.penalty_window,
        top_p=params.top_p,
        top_k=params.top_k,
        min_keep=params.min_keep,
    )


def fixed_logits(seed: int, scale: float = 2.5) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(N_CODES)).astype(np.float32)


def tied_logits() -> np.ndarray:
    """Ties around the top-k boundary: 20 distinct leaders, then 10 equal values at ranks 21-30."""
    logits = fixed_logits(40, scale=1.0) - 6.0
    logits[100:120] = np.linspace(8.0, 4.0, 20, dtype=np.float32)
    logits[500:510] = 3.0
    return logits


def peaked_logits() -> np.ndarray:
    """One code far ahead: TopP alone would keep one entry, so min_keep decides."""
    logits = fixed_logits(41)
    logits[77] = 40.0
    return logits


def negative_logits() -> np.ndarray:
    """All logits negative: the penalty multiplies (pushes them further down)."""
    return -np.abs(fixed_logits(42)) - 0.5


REPEATED = [77, 77, 77, 105, 105, 3, 500, 501]
LONG_HISTORY = [int(c) for c in np.random.default_rng(9).integers(0, 40, 40)] + [77] * 5
SAMPLER_CASES = {
    "defaults": (fixed_logits(1), {}, []),
    "defaults, history with repeats": (fixed_logits(1), {}, REPEATED + [int(fixed_logits(1).argmax())] * 3),
    "long history, window 16": (fixed_logits(2), {}, LONG_HISTORY),
    "window 4": (fixed_logits(2), {"penalty_window": 4}, LONG_HISTORY),
    "strong penalty": (fixed_logits(3), {"repetition_penalty": 1.5}, [int(fixed_logits(3).argmax())] * 4),
    "negative logits": (negative_logits(), {"repetition_penalty": 1.3}, REPEATED),
    "ties at the top-k boundary": (tied_logits(), {"top_k": 25, "top_p": 1.0}, []),
    "ties split by top_p": (tied_logits(), {"top_k": 25, "top_p": 0.999}, []),
    "ties, penalised": (tied_logits(), {"top_k": 25}, [500, 501, 100]),
    "min_keep over top_p": (peaked_logits(), {}, []),
    "min_keep 5 over top_k 2": (fixed_logits(4), {"top_k": 2, "min_keep": 5}, [3]),
    "top_p tiny": (fixed_logits(5), {"top_p": 0.01}, REPEATED),
    "temperature 0.3": (fixed_logits(6), {"temperature": 0.3}, REPEATED),
    "temperature 1.7, top_k 200": (fixed_logits(7), {"temperature": 1.7, "top_k": 200}, REPEATED),
    "greedy (temperature 0)": (fixed_logits(8), {"temperature": 0.0}, REPEATED),
}


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("case", list(SAMPLER_CASES))
def test_process_matches_reference(case: str, first: bool) -> None:
    logits, overrides, history = SAMPLER_CASES[case]
    params = engine_params(**overrides)
    ours = omni_engine.TtsSampler(params).process(logits, history, first)
    expected = reference_process(logits, history, first, settings_of(params))
    kept = np.isfinite(expected)
    assert ours.shape == (N_CODES,) and ours.dtype == np.float32
    np.testing.assert_array_equal(np.isfinite(ours), kept)
    assert np.all(ours[~kept] == -np.inf)
    np.testing.assert_allclose(ours[kept], expected[kept], rtol=PROCESS_TOLERANCE, atol=0)
    if first:
        assert kept.all()


def test_reference_sampler_cases_exercise_what_they_name() -> None:
    """The cases are built to hit each rule; check the reference does so (kept-set sizes)."""

    def kept(case: str, first: bool = False) -> int:
        logits, overrides, history = SAMPLER_CASES[case]
        return int(np.isfinite(reference_process(logits, history, first, SamplerSettings(**overrides))).sum())

    assert kept("defaults") == 25  # TopP keeps more than 25 of these logits, TopK cuts to 25
    assert kept("ties at the top-k boundary") == 30  # ranks 21-30 tie with the 25th value: all kept
    # TopP's ascending order puts the lower indices of a tie first, so they go first: 8 of the 10 stay.
    assert kept("ties split by top_p") == 28
    assert kept("min_keep over top_p") == 3
    assert kept("min_keep 5 over top_k 2") == 5
    assert kept("top_p tiny") == 3
    assert kept("defaults", first=True) == N_CODES


def choose_grid(processed: np.ndarray) -> list[float]:
    """u values of a 400-point grid farther than 1e-6 from every cumulative-probability boundary (float32
    vs float64 summation cannot flip them)."""
    boundaries = cumulative_probabilities(processed)
    grid = (np.arange(400) + 0.5) / 400
    distance = np.abs(grid[:, None] - boundaries[None, :]).min(axis=1)
    safe = [float(u) for u in grid[distance > 1e-6]]
    assert len(safe) >= 390
    return safe


@pytest.mark.parametrize("case", ["defaults", "ties at the top-k boundary", "temperature 1.7, top_k 200"])
def test_choose_matches_reference(case: str) -> None:
    logits, overrides, history = SAMPLER_CASES[case]
    sampler = omni_engine.TtsSampler(engine_params(**overrides))
    processed = sampler.process(logits, history, False)
    grid = choose_grid(processed)
    ours = [sampler.choose(processed, u) for u in grid]
    assert ours == [reference_choose(processed, u) for u in grid]
    assert set(ours) <= set(np.nonzero(np.isfinite(processed))[0].tolist())
    assert len(set(ours)) > 5


def test_choose_edges() -> None:
    sampler = omni_engine.TtsSampler(engine_params())
    one_hot = np.full(N_CODES, -np.inf, dtype=np.float32)
    one_hot[4218] = 0.0
    assert [sampler.choose(one_hot, u) for u in (0.0, 0.5, 0.999999)] == [4218, 4218, 4218]
    two = np.full(N_CODES, -np.inf, dtype=np.float32)
    two[[10, 20]] = 0.0  # probabilities 0.5 / 0.5
    assert [sampler.choose(two, u) for u in (0.0, 0.25, 0.49, 0.51, 0.99)] == [10, 10, 10, 20, 20]


def test_sample_is_reproducible_and_stays_in_the_kept_set() -> None:
    params = engine_params(seed=1234)
    logits = [fixed_logits(50 + i) for i in range(30)]
    history: list[int] = []
    runs = []
    for _ in range(2):
        sampler = omni_engine.TtsSampler(params)
        runs.append([sampler.sample(x, history, i == 0) for i, x in enumerate(logits)])
    assert runs[0] == runs[1]
    other = omni_engine.TtsSampler(engine_params(seed=4321))
    assert [other.sample(x, history, i == 0) for i, x in enumerate(logits)] != runs[0]
    settings = settings_of(params)
    for i, (x, code) in enumerate(zip(logits[1:], runs[0][1:], strict=True)):
        assert np.isfinite(reference_process(x, history, False, settings)[code]), f"step {i + 1}"


def test_sample_frequencies_follow_the_processed_distribution() -> None:
    params = engine_params(seed=7, top_k=5)
    sampler = omni_engine.TtsSampler(params)
    logits = fixed_logits(60, scale=0.5)
    draws = np.array([sampler.sample(logits, [], False) for _ in range(1000)])
    probabilities = softmax(reference_process(logits, [], False, settings_of(params)))
    kept = np.nonzero(probabilities > 0)[0]
    assert set(np.unique(draws).tolist()) == set(kept.tolist())
    frequencies = np.array([(draws == code).mean() for code in kept])
    np.testing.assert_allclose(frequencies, probabilities[kept], atol=0.05)  # ~4 sigma for 1000 draws


def test_greedy_sample_is_the_argmax_of_the_processed_logits() -> None:
    params = engine_params(temperature=0.0, seed=3, repetition_penalty=1.5)
    sampler = omni_engine.TtsSampler(params)
    for seed in range(6):
        logits = fixed_logits(70 + seed)
        history, first = [int(logits.argmax())] * 3, seed == 0
        expected = int(reference_process(logits, history, first, settings_of(params)).argmax())
        assert expected == int(logits.argmax()) if first else expected != int(logits.argmax())
        assert sampler.sample(logits, history, first) == expected


# ---- SpeechGenerator positions ---------------------------------------------------------------------


def test_positions_follow_condition_and_codes(tts: omni_engine.Tts) -> None:
    params = engine_params(seed=5, max_tokens_per_chunk=30)
    generator = omni_engine.SpeechGenerator(tts, params)
    generator.start_turn()
    assert generator.position == 0
    ids, hidden = chunk_inputs(7, seed=31)
    codes = generator.speak_chunk(ids, hidden, last=False)
    assert 0 < len(codes) <= 30 and all(0 <= c < EOS_CODE for c in codes)
    assert generator.position == 7 + 1 + len(codes)
    before = generator.position
    ids, hidden = chunk_inputs(4, seed=32)
    codes = generator.speak_chunk(ids, hidden, last=False)
    assert generator.position == before + 4 + 1 + len(codes)
    before = generator.position
    codes = generator.speak_chunk([], np.zeros((0, N_LLM_EMBD), dtype=np.float32), last=True)
    assert all(0 <= c < EOS_CODE for c in codes) and len(codes) <= 30
    assert generator.position == before + 2 + len(codes)
    generator.start_turn()
    assert generator.position == 0
    ids, hidden = chunk_inputs(5, seed=33)
    codes = generator.speak_chunk(ids, hidden, last=True)
    assert generator.position == 5 + 2 + len(codes)


def test_same_seed_same_turn(tts: omni_engine.Tts) -> None:
    ids, hidden = chunk_inputs(8, seed=41)
    turns = []
    for _ in range(2):
        generator = omni_engine.SpeechGenerator(tts, engine_params(seed=99, max_tokens_per_chunk=40))
        generator.start_turn()
        turns.append(generator.speak_chunk(ids, hidden, last=True))
    assert turns[0] == turns[1] and len(turns[0]) > 0


# ---- token grouping and TTS-valid ids -------------------------------------------------------------


def test_speech_token_grouper_releases_groups_of_25_in_order() -> None:
    grouper = omni_engine.internals.SpeechTokenGrouper()
    stream = list(range(1000, 1089))  # 7 + 30 + 0 + 49 + 3 = 89 codes
    released: list[list[int]] = []
    start = 0
    expected_groups, expected_pending = [0, 1, 0, 2, 0], [7, 12, 12, 11, 14]
    for size, n_groups, pending in zip([7, 30, 0, 49, 3], expected_groups, expected_pending, strict=True):
        groups = grouper.push(stream[start : start + size])
        start += size
        assert len(groups) == n_groups and all(len(group) == 25 for group in groups)
        assert grouper.pending == pending
        released.extend(groups)
    assert [code for group in released for code in group] == stream[:75]
    assert grouper.flush() == stream[75:]
    assert grouper.pending == 0 and grouper.flush() == []


def test_speech_token_grouper_other_group_size() -> None:
    grouper = omni_engine.internals.SpeechTokenGrouper(4)
    assert grouper.push([1, 2, 3]) == []
    assert grouper.push([4, 5, 6, 7, 8, 9]) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert grouper.flush() == [9]


@pytest.mark.parametrize(
    ("token", "valid"),
    [
        (151667, False),  # <think>
        (151668, False),  # </think>
        (151704, False),  # <|tts_eos|>
        (151705, False),
        (151706, False),
        (151717, False),
        (151718, False),
        (151721, False),  # <|chunk_tts_eos|>
        (271, False),  # "\n\n"
        (150000, False),
        (151643, False),
        (AUDIO_BOS_ID, False),
        (0, True),
        (270, True),
        (272, True),
        (198, True),
        (149999, True),
    ],
)
def test_is_tts_valid(token: int, valid: bool) -> None:
    assert omni_engine.internals.is_tts_valid(token) is valid

"""The text sampler's math equals a NumPy implementation of the PyTorch reference (pipeline.md §6.1):
forbid -> repetition penalty -> length penalty -> temperature -> top-k -> top-p -> min-p -> multinomial."""

from __future__ import annotations

import numpy as np
import pytest

import omni_engine as oe


def reference_probabilities(
    logits: np.ndarray,
    history: list[int],
    terminators: list[int],
    forbidden: list[int],
    p: oe.SamplingParams,
) -> np.ndarray:
    x = logits.astype(np.float64).copy()
    x[forbidden] = -np.inf
    window = history[-p.repetition_window :] if p.repetition_window > 0 else []
    for t in set(window):
        if np.isfinite(x[t]):
            x[t] = x[t] / p.repetition_penalty if x[t] > 0 else x[t] * p.repetition_penalty
    for t in terminators:
        if np.isfinite(x[t]):
            x[t] = x[t] / p.length_penalty if x[t] > 0 else x[t] * p.length_penalty
    out = np.zeros_like(x)
    if p.temperature <= 0:
        out[int(np.argmax(x))] = 1.0
        return out
    x = x / p.temperature
    order = np.argsort(-x, kind="stable")
    order = order[np.isfinite(x[order])]
    if 0 < p.top_k < len(order):
        kth = x[order[p.top_k - 1]]
        order = order[x[order] >= kth]
    probs = np.exp(x[order] - x[order[0]])
    probs /= probs.sum()
    if p.top_p < 1.0:
        before = np.concatenate([[0.0], np.cumsum(probs)[:-1]])
        order = order[before < p.top_p]
        probs = np.exp(x[order] - x[order[0]])
        probs /= probs.sum()
    if p.min_p > 0:
        order = order[probs >= probs[0] * p.min_p]
        probs = np.exp(x[order] - x[order[0]])
        probs /= probs.sum()
    out[order] = probs
    return out


PARAMS = [
    dict(temperature=0.7, top_k=100, top_p=0.8, repetition_penalty=1.02, repetition_window=128),
    dict(
        temperature=1.3, top_k=0, top_p=1.0, repetition_penalty=1.5, repetition_window=4, length_penalty=1.1
    ),
    dict(temperature=0.5, top_k=5, top_p=0.95, min_p=0.05, repetition_penalty=1.0, length_penalty=0.7),
    dict(temperature=0.0, repetition_penalty=2.0),
    dict(temperature=1.0, top_k=40, top_p=0.3, repetition_penalty=1.2, repetition_window=1),
]


@pytest.mark.parametrize("kwargs", PARAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probabilities_equal_numpy_reference(kwargs: dict, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = 2000
    logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
    history = rng.integers(0, 50, size=40).tolist()
    terminators = [3, 7]
    forbidden = [0, 11, 12]
    params = oe.SamplingParams(**kwargs)
    ours = oe.Sampler(params).apply(logits, history, terminators, forbidden)
    ref = reference_probabilities(logits, history, terminators, forbidden, params)
    assert np.array_equal(ours > 0, ref > 0), "different candidate sets"
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    assert ours[forbidden].sum() == 0


def test_penalty_is_sign_aware_and_counts_unique_ids() -> None:
    logits = np.array([2.0, -2.0, 1.0, 0.5], dtype=np.float32)
    params = oe.SamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=2.0)
    once = oe.Sampler(params).apply(logits, [0, 1])
    many = oe.Sampler(params).apply(logits, [0, 0, 0, 1, 1])
    expected = np.exp([1.0, -4.0, 1.0, 0.5])
    np.testing.assert_allclose(once, expected / expected.sum(), rtol=1e-6)
    np.testing.assert_allclose(many, once, rtol=0, atol=0)


def test_seeded_sampling_repeats_and_follows_the_distribution() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    params = oe.SamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=7)
    draws_a = [oe.Sampler(params).sample(logits) for _ in range(3)]
    sampler = oe.Sampler(params)
    draws = np.array([sampler.sample(logits) for _ in range(20000)])
    sampler_b = oe.Sampler(params)
    assert [sampler_b.sample(logits) for _ in range(20000)] == draws.tolist()
    assert len(set(draws_a)) == 1
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)


def test_all_forbidden_is_an_error() -> None:
    with pytest.raises(oe.EngineError, match="forbidden"):
        oe.Sampler(oe.SamplingParams()).sample(np.zeros(3, dtype=np.float32), [], [], [0, 1, 2])

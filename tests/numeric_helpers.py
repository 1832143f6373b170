"""Error measures and deterministic synthetic inputs shared by the parity, engine and GPU tests."""

from __future__ import annotations

import numpy as np


def max_rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| over arrays of one shape."""
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


def random_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3) noise, a function of (seed, width, height)."""
    return np.random.default_rng([seed, width, height]).integers(0, 256, (height, width, 3), dtype=np.uint8)


def random_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """float32 (3, height, width) uniform in [-1, 1] (a normalised chunk), from (seed, width, height)."""
    return np.random.default_rng([seed, width, height]).uniform(-1, 1, (3, height, width)).astype(np.float32)

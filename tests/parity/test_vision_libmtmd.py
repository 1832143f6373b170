"""Upstream libmtmd (linked into omni_engine) as a second reference for the vision stage.

The engine runs its own SigLIP + resampler graph instead of libmtmd's CLIP encoder (vision_encoder.h says
why). These tests pin the two facts that choice rests on:
- libmtmd loads the vision file our writer produces in the official layout unchanged and encodes it;
- with every layer of the file run (libmtmd has no drop-last-layer rule, model-files.md §4.7), libmtmd, our
  graph and the PyTorch reference agree within the F16 bound, and on an all-F32 file our graph is far closer
  to PyTorch than libmtmd (libmtmd's CPU patch embedding and GELU go through F16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import vision_reference as vr
from numeric_helpers import max_rel_error

import omni_engine as oe
from omni_app.tiny_models.vision import VisionDims, write_vision

F16_BOUND = 1e-3
OUR_F32_BOUND = 1e-5
DIMS = VisionDims(width=64, n_head=4, n_ff=96, n_layer=3, resampler_width=256)
CHUNKS = [(56, 56), (98, 42), (224, 168)]


Rows = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def encode_everywhere(path: Path) -> Rows:
    """(libmtmd, ours with every layer, PyTorch with every layer) rows per chunk."""
    ours = oe.VisionEncoder(str(path), n_threads=2, n_layers=DIMS.n_layer)
    reference = vr.load_vision_reference(path)
    rng = np.random.default_rng(11)
    rows = []
    for width, height in CHUNKS:
        pixels = rng.uniform(-1.0, 1.0, (3, height, width)).astype(np.float32)
        mtmd = oe.internals.libmtmd_encode_chunk(str(path), pixels, n_threads=2)
        rows.append((mtmd, ours.encode_chunk(pixels), vr.encode(reference, pixels)))
    return rows


@pytest.fixture(scope="module")
def outputs_by_dtype(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rows]:
    outputs = {}
    for dtype in ("f16", "f32"):
        path = tmp_path_factory.mktemp(f"mtmd_{dtype}") / "vision.gguf"
        write_vision(path, seed=3, dims=DIMS, dtype=dtype)
        outputs[dtype] = encode_everywhere(path)
    return outputs


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_libmtmd_loads_the_file_and_returns_64_rows_of_the_llm_width(
    outputs_by_dtype: dict[str, Rows], dtype: str
) -> None:
    for mtmd, ours, _ in outputs_by_dtype[dtype]:
        assert mtmd.shape == ours.shape == (64, DIMS.resampler_width)
        assert np.isfinite(mtmd).all()


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_libmtmd_ours_and_pytorch_agree_within_the_f16_bound(
    outputs_by_dtype: dict[str, Rows], dtype: str
) -> None:
    for mtmd, ours, torch_rows in outputs_by_dtype[dtype]:
        assert max_rel_error(mtmd, torch_rows) < F16_BOUND
        assert max_rel_error(ours, mtmd) < F16_BOUND


def test_on_an_f32_file_our_graph_is_exact_where_libmtmd_rounds_through_f16(
    outputs_by_dtype: dict[str, Rows],
) -> None:
    for mtmd, ours, torch_rows in outputs_by_dtype["f32"]:
        assert max_rel_error(ours, torch_rows) < OUR_F32_BOUND
        assert max_rel_error(mtmd, torch_rows) > 10 * max_rel_error(ours, torch_rows)

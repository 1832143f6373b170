"""The vision reference of tests/vision_reference.py on its own: the PyTorch reference's slicing arithmetic,
preprocessing, ViT position buckets, resampler key positions and the reference module on a tiny GGUF."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_reference import read_tensor
from PIL import Image
from vision_reference import (
    SlicePlan,
    bucket_position_ids,
    cpp_slices,
    encode,
    encode_image,
    load_vision_reference,
    normalise,
    preprocess,
    resampler_key_positions,
    slice_plan,
)

from omni_app.config import read_gguf_header
from omni_app.tiny_models.vision import TINY_VISION_DIMS, write_vision

TINY_SCALE = TINY_VISION_DIMS.image_size  # 56: the tiny file's clip.vision.image_size

# ---- slice plan -----------------------------------------------------------------------------------

# (width, height, max_slices) -> (overview, grid (cols, rows), refine, slice) at S = 448, patch 14.
#
# 1920x1080, max 9: area / 448^2 = 2073600 / 200704 = 10.33 -> ceil 11 -> min(11, 9) = 9; candidates 8, 9
#   (10 > 9). log(1920/1080) = 0.575; grids 1x8 2x4 4x2 8x1 1x9 3x3 9x1: |0.575 - log 2| = 0.118 (4x2) is
#   the smallest (3x3: 0.575). Overview: r = 1.778, h = int(448 / 1.3333) = 336, w = int(336 * 1.778) = 597
#   -> 597 / 14 = 42.6 -> 602; 336 / 14 = 24 -> 336. Refine: 1920 is a multiple of 4, 1080 of 2, cell
#   480x540, r = 0.8889, h = int(448 / 0.9428) = 475, w = int(475 * 0.8889) = 422 -> 420 x 476 (475/14 = 33.9
#   -> 34); refine 4 * 420 x 2 * 476 = 1680 x 952.
# 1000x1000, max 2: multiple min(ceil(4.98), 2) = 2; candidates {2}; grids 1x2 and 2x1 tie (|0 - log 2|),
#   the first (1 column, 2 rows) wins. Overview: not upscaled, r = 1, h = w = int(448) -> 448x448. Refine:
#   cell 1000 x 500, r = 2, h = int(448 / 1.41421) = 316, w = 632 -> 630 (45.1) x 322 (22.6 -> 23);
#   refine 630 x 644.
# 10x10, any max: ceil(100 / 200704) = 1 -> no slices; overview upscaled to h = w = 448.
# 4000x3000, max 9: ceil(59.8) -> 9; log(4/3) = 0.288 -> 3x3 (0.288) beats 4x2 (0.405); overview r = 1.333,
#   h = int(448 / 1.1547) = 387, w = int(387 * 1.3333) = 516 -> 518 (36.86 -> 37) x 392 (27.64 -> 28).
#   Refine: ensure_divide(4000, 3) = round(1333.3) * 3 = 3999, 3000 -> 3000; cell 1333 x 1000 -> 518 x 392.
# 307x400, max 0: r = 0.7675, h = int(448 / 0.87607) = 511, w = int(511 * 0.7675) = 392; 511 / 14 = 36.5
#   rounds HALF TO EVEN to 36 -> 504 (a half-up port would give 518).
SLICE_TABLE = {
    (448, 448, 0): ((448, 448), None, None, None),
    (448, 448, 9): ((448, 448), None, None, None),
    (1000, 1000, 0): ((448, 448), None, None, None),
    (1000, 1000, 2): ((448, 448), (1, 2), (630, 644), (630, 322)),
    (1000, 1000, 9): ((448, 448), (2, 2), (896, 896), (448, 448)),
    (1920, 1080, 0): ((602, 336), None, None, None),
    (1920, 1080, 2): ((602, 336), (2, 1), (840, 476), (420, 476)),
    (1920, 1080, 9): ((602, 336), (4, 2), (1680, 952), (420, 476)),
    (1080, 1920, 2): ((336, 602), (1, 2), (476, 840), (476, 420)),
    (1080, 1920, 9): ((336, 602), (2, 4), (952, 1680), (476, 420)),
    (10, 10, 0): ((448, 448), None, None, None),
    (10, 10, 9): ((448, 448), None, None, None),
    (4000, 3000, 2): ((518, 392), (2, 1), (728, 546), (364, 546)),
    (4000, 3000, 9): ((518, 392), (3, 3), (1554, 1176), (518, 392)),
    (3000, 200, 9): ((1722, 112), (4, 1), (3472, 224), (868, 224)),
    (100, 2000, 9): ((98, 2002), None, None, None),
    (307, 400, 0): ((392, 504), None, None, None),
}


@pytest.mark.parametrize(("size", "expected"), SLICE_TABLE.items(), ids=[str(k) for k in SLICE_TABLE])
def test_slice_plan_table(size: tuple[int, int, int], expected: tuple) -> None:
    overview, grid, refine, slice_size = expected
    assert slice_plan(*size) == SlicePlan(overview, grid, refine, slice_size)


def test_slice_plan_invariants_on_a_sweep() -> None:
    for width in range(50, 3000, 97):
        for height in range(40, 2500, 113):
            for max_slices in (0, 2, 9):
                plan = slice_plan(width, height, max_slices)
                assert all(side % 14 == 0 and side >= 14 for side in plan.overview)
                if plan.grid is None:
                    continue
                assert 2 <= plan.n_slices <= max_slices
                assert plan.overview[0] * plan.overview[1] <= width * height
                assert plan.refine == (plan.slice_size[0] * plan.grid[0], plan.slice_size[1] * plan.grid[1])
                assert all(side % 14 == 0 for side in plan.slice_size)


def test_slice_plan_at_tiny_scale_matches_the_upstream_run_in_the_spec() -> None:
    # model-files.md §9.4: libmtmd slices a 640x488 image for the tiny file (S = 56) into a 56x42 overview and
    # a 3x3 grid of 56x42 slices. ceil(312320 / 3136) = 100 -> 9; 3x3 (|log 1.311| = 0.271) beats 4x2 (0.422).
    plan = slice_plan(640, 488, 9, scale_resolution=TINY_SCALE)
    assert plan == SlicePlan((56, 42), (3, 3), (168, 126), (56, 42))


@pytest.mark.parametrize(
    ("size", "python_slices", "cpp"),
    [
        ((600, 300, 9), False, True),  # area 180000 < 448^2: PY ceil(0.897) = 1; CPP: width 600 > 448
        ((449, 449, 9), True, True),
        ((448, 448, 9), False, False),
        ((1000, 1000, 0), False, False),
    ],
)
def test_slicing_decision_disagreement_with_cpp(
    size: tuple[int, int, int], python_slices: bool, cpp: bool
) -> None:
    assert (slice_plan(*size).grid is not None) == python_slices
    assert cpp_slices(*size) == cpp


# ---- preprocessing --------------------------------------------------------------------------------


def gradient_image(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 77.0),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def test_normalise_maps_bytes_to_minus_one_one() -> None:
    image = Image.fromarray(np.array([[[0, 51, 255]]], dtype=np.uint8), "RGB")
    assert normalise(image).shape == (3, 1, 1)
    np.testing.assert_allclose(normalise(image).ravel(), [-1.0, -0.6, 1.0], rtol=0, atol=1e-7)


def test_preprocess_chunk_sizes_follow_the_plan() -> None:
    chunks = preprocess(gradient_image(1920, 1080), max_slices=9)
    assert [chunk.shape for chunk in chunks] == [(3, 336, 602)] + [(3, 476, 420)] * 8
    assert all(chunk.dtype == np.float32 for chunk in chunks)
    assert min(float(c.min()) for c in chunks) >= -1.0 and max(float(c.max()) for c in chunks) <= 1.0


def test_preprocess_slices_tile_the_bicubic_refined_image_row_major() -> None:
    image = gradient_image(1000, 700)
    plan = slice_plan(1000, 700, 9)
    assert plan.grid == (2, 2)
    refined = normalise(image.resize(plan.refine, resample=Image.Resampling.BICUBIC))
    chunks = preprocess(image, max_slices=9)
    top = np.concatenate(chunks[1:3], axis=2)
    bottom = np.concatenate(chunks[3:5], axis=2)
    np.testing.assert_array_equal(np.concatenate([top, bottom], axis=1), refined)
    overview = normalise(image.resize(plan.overview, resample=Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(chunks[0], overview)


def test_preprocess_without_slicing_gives_only_the_upscaled_overview() -> None:
    chunks = preprocess(gradient_image(30, 20), max_slices=9)
    # r = 1.5, h = int(448 / 1.2247) = 365, w = int(547.5) = 547 -> 546 (39.07) x 364 (26.07)
    assert [chunk.shape for chunk in chunks] == [(3, 364, 546)]


# ---- positions ------------------------------------------------------------------------------------


def test_bucket_position_ids_for_a_3x4_grid() -> None:
    # rows floor(70 i / 3) = 0, 23, 46; columns floor(70 j / 4) = 0, 17 (17.5), 35, 52 (52.5)
    expected = [[0, 17, 35, 52], [1610, 1627, 1645, 1662], [3220, 3237, 3255, 3272]]
    np.testing.assert_array_equal(bucket_position_ids(3, 4), np.array(expected).ravel())


def test_bucket_position_ids_other_grids() -> None:
    np.testing.assert_array_equal(bucket_position_ids(70, 70), np.arange(4900))
    # 32x32 (a 448x448 overview): floor(70 * 31 / 32) = 67 -> last id 67 * 70 + 67 = 4757
    ids_32 = bucket_position_ids(32, 32)
    assert ids_32.shape == (1024,) and ids_32[1] == 2 and ids_32[32] == 140 and ids_32[-1] == 4757
    # 1x140: two columns per bucket
    np.testing.assert_array_equal(bucket_position_ids(1, 140), np.arange(140) // 2)
    # 4x3 (tiny 56x42 chunk): rows 0, 17, 35, 52; columns 0, 23, 46
    assert bucket_position_ids(4, 3).tolist() == [r * 70 + c for r in (0, 17, 35, 52) for c in (0, 23, 46)]


def test_resampler_key_positions_hand_values_width_8() -> None:
    # width 8: quarter 2, w = (1, 10000^-0.5 = 0.01); patch (i=1, j=2) of a 2x3 grid is row 1 * 3 + 2 = 5.
    rows = resampler_key_positions(2, 3, 8)
    expected = [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02),
                math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]  # fmt: skip
    assert rows.shape == (6, 8) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[5], expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(rows[0], [0, 0, 1, 1, 0, 0, 1, 1], rtol=0, atol=0)


def test_resampler_key_positions_crop_the_70x70_table_of_the_writer(vision_path: Path) -> None:
    # The PY resampler slices its 70x70 cache to [:p_h, :p_w] (no bucketing); the file's pos_embed_k is the
    # converter's full table written independently by the tiny writer.
    header = read_gguf_header(vision_path)
    table = read_tensor(header, "resampler.pos_embed_k")
    np.testing.assert_allclose(resampler_key_positions(70, 70, 128), table, rtol=0, atol=1e-6)
    rows, cols = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    np.testing.assert_allclose(
        resampler_key_positions(4, 3, 128), table[(rows * 70 + cols).ravel()], rtol=0, atol=1e-6
    )


# ---- reference module on a tiny file --------------------------------------------------------------


@pytest.fixture(scope="module")
def vision_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vision(tmp_path_factory.mktemp("tiny_vision") / "vision.gguf", seed=3)


@pytest.fixture(scope="module")
def reference(vision_path: Path):
    return load_vision_reference(vision_path)


def test_reference_holds_the_file_weights_with_the_ffn_swap(vision_path: Path, reference) -> None:
    header = read_gguf_header(vision_path)
    layer = reference.vit.encoder.layers[1]
    fc1, fc2 = layer.mlp.fc1.weight.detach().numpy(), layer.mlp.fc2.weight.detach().numpy()
    assert fc1.shape == (64, 32) and fc2.shape == (32, 64)
    np.testing.assert_array_equal(fc1, read_tensor(header, "v.blk.1.ffn_down.weight"))
    np.testing.assert_array_equal(fc2, read_tensor(header, "v.blk.1.ffn_up.weight"))
    attn = reference.resampler.attn
    np.testing.assert_array_equal(attn.in_proj_weight[128:256].detach().numpy(),
                                  read_tensor(header, "resampler.attn.k.weight"))  # fmt: skip
    assert reference.resampler.attn.num_heads == 1
    assert reference.vit.embeddings.position_embedding.weight.shape == (4900, 32)
    assert len(reference.vit.encoder.layers) == 2
    assert reference.vit.config.hidden_act == "gelu_pytorch_tanh"


@pytest.mark.parametrize("size", [(56, 56), (112, 56), (56, 112), (640, 488), (30, 200), (200, 30), (7, 9)])
def test_reference_encodes_every_chunk_to_64_finite_rows(reference, size: tuple[int, int]) -> None:
    image = gradient_image(*size)
    plan = slice_plan(*size, 9, scale_resolution=TINY_SCALE)
    rows = encode_image(reference, image, max_slices=9, scale_resolution=TINY_SCALE)
    assert len(rows) == 1 + plan.n_slices
    for chunk in rows:
        assert chunk.shape == (64, 128) and chunk.dtype == np.float32
        assert np.isfinite(chunk).all()
        assert float(chunk.std()) > 0.1  # ln_post output: neither constant nor collapsed
    if plan.n_slices:
        assert not np.allclose(rows[1], rows[-1], atol=1e-3)  # different pixels, different rows


def test_square_70x70_grid_equals_the_transformers_forward(reference) -> None:
    # 980x980 pixels -> 70x70 patches: the bucket ids are the identity, which is transformers' own path.
    pixels = torch.from_numpy(np.random.default_rng(5).uniform(-1, 1, (3, 980, 980)).astype(np.float32))
    with torch.no_grad():
        ours, patch_rows, patch_cols = reference.vit_states(pixels)
        theirs = reference.vit(pixel_values=pixels[None]).last_hidden_state[0]
    assert (patch_rows, patch_cols) == (70, 70)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def vit_states_with_row_shifted(reference, pixels: np.ndarray, row: int) -> torch.Tensor:
    table = reference.vit.embeddings.position_embedding.weight
    saved = table[row].clone()
    try:
        with torch.no_grad():
            # a random direction: a uniform shift would be removed by the LayerNorms
            table[row] += torch.from_numpy(np.random.default_rng(row).normal(0, 1, table.shape[1]))
            return reference.vit_states(torch.from_numpy(pixels))[0]
    finally:
        with torch.no_grad():
            table[row] = saved


def test_non_square_grid_reads_the_bucketed_position_rows(reference) -> None:
    # A 14x28 chunk is a 1x2 patch grid: ids floor(70 * 0 / 2) = 0 and floor(70 * 1 / 2) = 35, not 0 and 1.
    pixels = np.random.default_rng(6).uniform(-1, 1, (3, 14, 28)).astype(np.float32)
    with torch.no_grad():
        base = reference.vit_states(torch.from_numpy(pixels))[0]
    torch.testing.assert_close(vit_states_with_row_shifted(reference, pixels, 1), base, rtol=0, atol=0)
    assert float((vit_states_with_row_shifted(reference, pixels, 35) - base).abs().max()) > 1e-2


def test_resampler_ignores_pos_embed_k(vision_path: Path, tmp_path: Path, reference) -> None:
    altered = tmp_path / "altered.gguf"
    shutil.copyfile(vision_path, altered)
    info = read_gguf_header(vision_path).tensors["resampler.pos_embed_k"]
    noise = np.random.default_rng(7).normal(0, 3, info.nbytes // 4).astype(np.float32)
    with altered.open("r+b") as handle:
        handle.seek(info.offset)
        handle.write(noise.tobytes())
    assert not np.array_equal(
        read_tensor(read_gguf_header(altered), "resampler.pos_embed_k"),
        read_tensor(read_gguf_header(vision_path), "resampler.pos_embed_k"),
    )
    chunk = preprocess(gradient_image(70, 56), max_slices=0, scale_resolution=TINY_SCALE)[0]
    np.testing.assert_array_equal(encode(load_vision_reference(altered), chunk), encode(reference, chunk))


def test_resampler_key_positions_change_the_output(reference) -> None:
    # The same 16 ViT states read as a 4x4 and as a 2x8 grid differ only in their key positions.
    states = torch.from_numpy(np.random.default_rng(8).normal(0, 1, (16, 32)).astype(np.float32))
    with torch.no_grad():
        square = reference.resampler(states, 4, 4)
        wide = reference.resampler(states, 2, 8)
    assert square.shape == wide.shape == (64, 128)
    assert float((square - wide).abs().max()) > 1e-3

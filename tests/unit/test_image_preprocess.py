"""omni_engine's vision preprocessing (cpp/vision/image_preprocess.cpp) against tests/vision_reference.py and
Pillow: the slice plan, the BICUBIC resize (bit-exact with the installed Pillow, including Pillow 13's
vertical-pass-first order for resizes that shrink the height much more than the width), the normalised chunks
and the argument errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from vision_reference import SlicePlan, preprocess, slice_plan

import omni_engine

TINY_SCALE = 56  # the tiny vision file's clip.vision.image_size
MAX_SLICES = (0, 1, 2, 9)

PLAN_SIZES = [
    # tiny and 1-pixel sides
    (1, 1), (2, 3), (10, 10), (14, 14), (13, 29), (1, 448), (448, 1), (1, 5000), (5000, 1),
    # around 448 x 448 (the area threshold)
    (448, 448), (449, 448), (448, 449), (449, 449), (447, 449), (500, 402), (634, 317),
    # odd sizes, half-to-even roundings (307x400: 511 / 14 = 36.5 -> 36)
    (307, 400), (21, 35), (35, 21), (333, 777), (777, 333), (1000, 1000), (1001, 999),
    # thin / tall extremes
    (40000, 1), (1, 40000), (4000, 50), (50, 4000), (3000, 200), (200, 3000), (10000, 448), (448, 10000),
    # camera and screen sizes, both orientations
    (640, 480), (480, 640), (1280, 720), (720, 1280), (1920, 1080), (1080, 1920), (3024, 4032), (4032, 3024),
    (2560, 1440), (800, 600), (1024, 768), (4000, 3000), (7680, 4320),
]  # fmt: skip


def reference_plan(plan: SlicePlan) -> dict:
    return {
        "overview": plan.overview,
        "grid": plan.grid,
        "refine": plan.refine,
        "slice_size": plan.slice_size,
    }


def random_rgb(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_rgb(width: int, height: int) -> np.ndarray:
    """A photo-like gradient image (random noise alone exercises the clamps but not the smooth regime)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [
        127.5 + 127.5 * np.sin(x / max(width, 1) * 7.0 + y / max(height, 1) * 3.0),
        255.0 * x / max(width - 1, 1),
        255.0 * (1.0 - y / max(height - 1, 1)),
    ]
    return np.clip(np.rint(np.stack(channels, axis=2)), 0, 255).astype(np.uint8)


def pil_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC))


# ---- slice plan ------------------------------------------------------------------------------------


def test_plan_sizes_cover_the_brief():
    assert len(PLAN_SIZES) >= 40 and len(set(PLAN_SIZES)) == len(PLAN_SIZES)


@pytest.mark.parametrize(("width", "height"), PLAN_SIZES)
def test_plan_equals_the_reference(width, height):
    got = {m: omni_engine.plan_image_slices(width, height, m) for m in MAX_SLICES}
    assert got == {m: reference_plan(slice_plan(width, height, m)) for m in MAX_SLICES}


@pytest.mark.parametrize(("width", "height"), PLAN_SIZES)
def test_plan_equals_the_reference_at_the_tiny_scale(width, height):
    got = {
        m: omni_engine.plan_image_slices(width, height, m, scale_resolution=TINY_SCALE, patch=14)
        for m in MAX_SLICES
    }
    assert got == {m: reference_plan(slice_plan(width, height, m, TINY_SCALE, 14)) for m in MAX_SLICES}


def test_plan_every_max_slices_on_a_dense_size_grid():
    sizes = [(w, h) for w in range(1, 1400, 97) for h in range(1, 1400, 89)]
    for width, height in sizes:
        for max_slices in range(10):
            expected = reference_plan(slice_plan(width, height, max_slices))
            assert omni_engine.plan_image_slices(width, height, max_slices) == expected, (
                width,
                height,
                max_slices,
            )


@pytest.mark.parametrize(
    ("width", "height", "max_slices", "expected"),
    [
        # worked out by hand in tests/unit/test_vision_reference.py's SLICE_TABLE
        (
            1920,
            1080,
            2,
            {"overview": (602, 336), "grid": (2, 1), "refine": (840, 476), "slice_size": (420, 476)},
        ),
        (
            1000,
            1000,
            2,
            {"overview": (448, 448), "grid": (1, 2), "refine": (630, 644), "slice_size": (630, 322)},
        ),
        (
            4000,
            3000,
            9,
            {"overview": (518, 392), "grid": (3, 3), "refine": (1554, 1176), "slice_size": (518, 392)},
        ),
        (307, 400, 0, {"overview": (392, 504), "grid": None, "refine": None, "slice_size": None}),
        (10, 10, 9, {"overview": (448, 448), "grid": None, "refine": None, "slice_size": None}),
    ],
)
def test_plan_pinned_values(width, height, max_slices, expected):
    assert omni_engine.plan_image_slices(width, height, max_slices) == expected


# ---- resize ----------------------------------------------------------------------------------------

RESIZE_PAIRS = [
    # down by non-integer factors (both passes, horizontal first)
    ((640, 480), (448, 336)), ((1920, 1080), (602, 336)), ((777, 333), (500, 331)), ((100, 37), (33, 31)),
    # down where the height loses more than twice as many pixels as the width: Pillow 13 runs the vertical
    # pass first
    ((50, 100), (117, 97)), ((26, 57), (32, 32)), ((21, 74), (6, 16)), ((200, 3000), (112, 1680)),
    # the order boundary: height shrink == 2 x width shrink (horizontal first) and one more (vertical first)
    ((60, 90), (50, 70)), ((60, 91), (50, 70)),
    # up, mixed, one pass only
    ((13, 17), (130, 170)), ((100, 37), (33, 91)), ((37, 100), (91, 33)), ((50, 50), (50, 20)),
    ((50, 50), (20, 50)), ((64, 48), (300, 48)), ((64, 48), (64, 300)),
    # 1-pixel sides and extreme factors
    ((1, 1), (14, 14)), ((1, 5), (7, 1)), ((5, 1), (1, 7)), ((1, 1), (1, 9)), ((2000, 3), (1, 1)),
    ((1, 2000), (1, 3)), ((3, 4000), (14, 448)), ((4000, 3), (448, 14)),
]  # fmt: skip


@pytest.mark.parametrize(("source", "target"), RESIZE_PAIRS)
def test_resize_is_bit_exact_with_pillow(source, target):
    for seed, rgb in enumerate([random_rgb(*source, seed=1), smooth_rgb(*source)]):
        got = omni_engine.resize_image_bicubic(rgb, *target)
        assert got.dtype == np.uint8 and got.shape == (target[1], target[0], 3)
        np.testing.assert_array_equal(got, pil_resize(rgb, *target), err_msg=f"image {seed}")


def test_resize_is_bit_exact_on_random_size_pairs():
    rng = np.random.default_rng(2024)
    for _ in range(300):
        source = tuple(int(v) for v in rng.integers(1, 90, 2))
        target = tuple(int(v) for v in rng.integers(1, 90, 2))
        rgb = rng.integers(0, 256, (source[1], source[0], 3), dtype=np.uint8)
        got = omni_engine.resize_image_bicubic(rgb, *target)
        np.testing.assert_array_equal(got, pil_resize(rgb, *target), err_msg=f"{source} -> {target}")


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (33, 20)])
def test_resize_to_the_same_size_returns_the_input(size):
    rgb = random_rgb(*size, seed=3)
    got = omni_engine.resize_image_bicubic(rgb, *size)
    np.testing.assert_array_equal(got, rgb)
    np.testing.assert_array_equal(got, pil_resize(rgb, *size))


def test_resize_reads_non_contiguous_arrays():
    rgb = random_rgb(40, 30, seed=4)
    view = np.swapaxes(
        np.ascontiguousarray(np.swapaxes(rgb, 0, 1)), 0, 1
    )  # same pixels, Fortran-like strides
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(omni_engine.resize_image_bicubic(view, 17, 23), pil_resize(rgb, 17, 23))


# ---- chunks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_slices", "scale_resolution", "n_chunks"),
    [
        ((640, 480), 9, 448, 3),
        ((1000, 1000), 2, 448, 3),
        ((1920, 1080), 2, 448, 3),
        ((300, 500), 0, 448, 1),
        ((13, 7), 1, 448, 1),
        ((300, 2400), 9, 448, 6),  # overview 154 x 1260: Pillow 13 resizes vertically first
        ((150, 100), 9, TINY_SCALE, 7),
        ((60, 60), 2, TINY_SCALE, 3),
    ],
)
def test_preprocess_equals_the_reference(size, max_slices, scale_resolution, n_chunks):
    for rgb in (random_rgb(*size, seed=5), smooth_rgb(*size)):
        got = omni_engine.preprocess_image(rgb, max_slices, scale_resolution=scale_resolution)
        expected = preprocess(Image.fromarray(rgb), max_slices, scale_resolution)
        assert len(got) == len(expected) == n_chunks
        for chunk, reference in zip(got, expected, strict=True):
            assert chunk.dtype == np.float32 and chunk.shape == reference.shape and chunk.shape[0] == 3
            np.testing.assert_array_equal(chunk, reference)


def test_preprocess_chunk_sizes_follow_the_plan():
    rgb = smooth_rgb(1920, 1080)
    plan = omni_engine.plan_image_slices(1920, 1080, 9)
    chunks = omni_engine.preprocess_image(rgb, 9)
    columns, rows = plan["grid"]
    assert [c.shape for c in chunks] == [(3, plan["overview"][1], plan["overview"][0])] + [
        (3, plan["slice_size"][1], plan["slice_size"][0])
    ] * (columns * rows)
    assert all(-1.0 <= float(c.min()) and float(c.max()) <= 1.0 for c in chunks)


# ---- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "pattern"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), r"rgb must be a uint8 array.*float32"),
        (np.zeros((4, 4, 3), dtype=np.int16), r"rgb must be a uint8 array.*int16"),
        (np.zeros((4, 4), dtype=np.uint8), r"rgb must be .*shape \(height, width, 3\).*\(4, 4\)"),
        (np.zeros((4, 4, 4), dtype=np.uint8), r"rgb must be .*got shape \(4, 4, 4\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), r"rgb must be .*height, width >= 1.*\(0, 4, 3\)"),
        (np.zeros((4, 0, 3), dtype=np.uint8), r"rgb must be .*\(4, 0, 3\)"),
    ],
)
def test_bad_arrays_raise_value_error_naming_rgb(rgb, pattern):
    with pytest.raises(ValueError, match=pattern):
        omni_engine.preprocess_image(rgb, 0)
    with pytest.raises(ValueError, match=pattern):
        omni_engine.resize_image_bicubic(rgb, 8, 8)


@pytest.mark.parametrize(("width", "height", "name"), [(0, 8, "width"), (8, 0, "height"), (-3, 8, "width")])
def test_bad_sides_raise_value_error_naming_the_side(width, height, name):
    with pytest.raises(ValueError, match=f"^{name} must be >= 1"):
        omni_engine.resize_image_bicubic(random_rgb(4, 4, seed=0), width, height)
    with pytest.raises(ValueError, match=f"^{name} must be >= 1"):
        omni_engine.plan_image_slices(width, height, 0)


@pytest.mark.parametrize("max_slices", [-1, 10, 100])
def test_max_slices_outside_0_to_9_raises(max_slices):
    with pytest.raises(ValueError, match=rf"^max_slices must be in 0\.\.9, got {max_slices}"):
        omni_engine.plan_image_slices(640, 480, max_slices)
    with pytest.raises(ValueError, match=rf"^max_slices must be in 0\.\.9, got {max_slices}"):
        omni_engine.preprocess_image(random_rgb(4, 4, seed=0), max_slices)


@pytest.mark.parametrize(
    ("keyword", "name"), [({"scale_resolution": 0}, "scale_resolution"), ({"patch": 0}, "patch")]
)
def test_bad_scale_or_patch_raises(keyword, name):
    with pytest.raises(ValueError, match=f"^{name} must be >= 1"):
        omni_engine.plan_image_slices(640, 480, 0, **keyword)
    with pytest.raises(ValueError, match=f"^{name} must be >= 1"):
        omni_engine.preprocess_image(random_rgb(4, 4, seed=0), 0, **keyword)


def test_too_many_patches_are_refused_before_any_resize():
    # 1 x 40000 without slices: the overview is upscaled to 14 x 89600 = 6400 patches (> 70 x 70)
    assert omni_engine.plan_image_slices(1, 40000, 0)["overview"] == (14, 89600)
    with pytest.raises(
        ValueError, match=r"^image: aspect ratio too extreme, a 14x89600 chunk has 6400 patches"
    ):
        omni_engine.preprocess_image(np.zeros((40000, 1, 3), dtype=np.uint8), 0)
    with pytest.raises(ValueError, match=r"^image: aspect ratio too extreme"):
        omni_engine.preprocess_image(np.zeros((1, 40000, 3), dtype=np.uint8), 0)


def test_the_largest_allowed_chunk_passes():
    # 70 x 70 patches exactly: a 980 x 980 overview at scale_resolution 980
    chunks = omni_engine.preprocess_image(
        np.full((1000, 1000, 3), 255, dtype=np.uint8), 0, scale_resolution=980
    )
    assert [c.shape for c in chunks] == [(3, 980, 980)]
    assert float(chunks[0].min()) == float(chunks[0].max()) == 1.0

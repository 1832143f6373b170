"""Pure logic of the bench's vision figures (omni_app.bench): the image sizes per file resolution, the
slice-count check, the timed run's calls, the metrics and the table. The engine itself is benchmarked by
`python -m omni_app bench` on a model directory with a vision file."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from omni_app import bench


def plan_with_grid(grid: tuple[int, int] | None) -> dict[str, Any]:
    return {"overview": (1, 1), "grid": grid, "refine": None, "slice_size": None}


def test_scaled_image_size_keeps_the_real_file_sizes_and_scales_the_tiny_ones():
    assert bench.scaled_image_size(bench.CAMERA_FRAME_SIZE, 448) == (640, 480)
    assert bench.scaled_image_size(bench.TWO_SLICE_IMAGE_SIZE, 448) == (1344, 672)
    assert bench.scaled_image_size(bench.CAMERA_FRAME_SIZE, 56) == (80, 60)
    assert bench.scaled_image_size(bench.TWO_SLICE_IMAGE_SIZE, 56) == (168, 84)
    assert bench.scaled_image_size((3, 2), 14) == (1, 1)  # never below one pixel


def test_plan_slice_count_multiplies_the_grid_and_is_zero_without_one():
    assert bench.plan_slice_count(plan_with_grid(None)) == 0
    assert bench.plan_slice_count(plan_with_grid((2, 1))) == 2
    assert bench.plan_slice_count(plan_with_grid((3, 3))) == 9


def test_vision_cases_size_both_images_for_the_file_and_ask_the_planner_about_each():
    """Fake planner (pure-Python stand-in for plan_image_slices): a 2x1 grid whenever slices are allowed."""
    calls: list[tuple[int, int, int]] = []

    def planner(width: int, height: int, max_slices: int) -> dict[str, Any]:
        calls.append((width, height, max_slices))
        return plan_with_grid((2, 1) if max_slices else None)

    cases = bench.vision_cases(56, planner)
    assert cases == [
        bench.VisionCase("overview", 80, 60, 0),
        bench.VisionCase("2slices", 168, 84, 2),
    ]
    assert calls == [(80, 60, 0), (168, 84, 2)]


def test_vision_cases_refuse_a_plan_that_does_not_give_two_slices():
    with pytest.raises(RuntimeError, match=r"bench image 1344x672 gets 4 slices at image_size 448, not 2"):
        bench.vision_cases(448, lambda w, h, m: plan_with_grid((2, 2) if m else None))


def test_synthetic_rgb_is_a_deterministic_uint8_image_of_the_asked_size():
    image = bench.synthetic_rgb(80, 60)
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, bench.synthetic_rgb(80, 60))
    assert not np.array_equal(image, bench.synthetic_rgb(80, 60, seed=1))
    assert image.min() < 16 and image.max() > 240  # spans the byte range, not a flat frame


class FakeVisionEncoder:
    """Pure-Python stand-in recording the calls (not the engine): 64 rows per chunk, `image_chunks` chunks
    from encode_image."""

    def __init__(self, image_chunks: int) -> None:
        self.image_chunks = image_chunks
        self.calls: list[tuple[str, Any]] = []

    def encode_chunk(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(("encode_chunk", pixels.shape))
        return np.zeros((64, 8), dtype=np.float32)

    def encode_image(self, rgb: np.ndarray, max_slices: int) -> list[np.ndarray]:
        self.calls.append(("encode_image", (rgb.shape, max_slices)))
        return [np.zeros((64, 8), dtype=np.float32)] * self.image_chunks


def fake_preprocess(rgb: np.ndarray, max_slices: int) -> list[np.ndarray]:
    """Pure-Python stand-in: an overview then max_slices 56x56 slices."""
    overview = np.zeros((3, 42, 84), dtype=np.float32)
    return [overview] + [np.zeros((3, 56, 56), dtype=np.float32)] * max_slices


def test_run_vision_image_encodes_each_preprocessed_chunk_then_the_whole_image():
    encoder = FakeVisionEncoder(image_chunks=3)
    rgb = bench.synthetic_rgb(168, 84)
    run = bench.run_vision_image(encoder, fake_preprocess, rgb, 2)
    assert encoder.calls == [
        ("encode_chunk", (3, 42, 84)),
        ("encode_chunk", (3, 56, 56)),
        ("encode_chunk", (3, 56, 56)),
        ("encode_image", ((84, 168, 3), 2)),
    ]
    assert run.chunk_shapes == [(3, 42, 84), (3, 56, 56), (3, 56, 56)]
    assert len(run.chunk_ms) == 3
    assert all(ms >= 0 for ms in [run.preprocess_ms, run.image_ms, *run.chunk_ms])


def test_run_vision_image_refuses_encode_image_chunks_that_differ_from_the_preprocessing():
    with pytest.raises(RuntimeError, match=r"encode_image gave 1 chunks, preprocess_image 3"):
        bench.run_vision_image(
            FakeVisionEncoder(image_chunks=1), fake_preprocess, bench.synthetic_rgb(8, 4), 2
        )


def test_record_vision_run_names_the_image_figures_and_adds_one_value_per_chunk():
    metrics = bench.Metrics()
    case = bench.VisionCase("2slices", 1344, 672, 2)
    shapes: list[tuple[int, ...]] = [(3, 322, 630), (3, 448, 448), (3, 448, 448)]
    bench.record_vision_run(case, bench.VisionImageRun(shapes, 1.5, [10.0, 11.0, 12.0], 40.0), metrics)
    bench.record_vision_run(case, bench.VisionImageRun(shapes, 2.5, [13.0, 14.0, 15.0], 50.0), metrics)
    summary = metrics.as_dict()
    assert list(summary) == ["vision_2slices_ms", "vision_2slices_preprocess_ms", "vision_chunk_ms"]
    assert summary["vision_2slices_ms"]["runs"] == [40.0, 50.0]
    assert summary["vision_2slices_ms"]["description"] == (
        "encode_image of a 1344x672 image, max_slices 2 (3 chunks)"
    )
    assert summary["vision_2slices_preprocess_ms"]["runs"] == [1.5, 2.5]
    assert summary["vision_chunk_ms"]["runs"] == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    assert summary["vision_chunk_ms"]["median"] == 12.5
    assert {item["unit"] for item in summary.values()} == {"ms"}


def vision_results(vision: dict[str, Any] | None) -> dict[str, Any]:
    metrics = bench.Metrics()
    metrics.add("vision_load_ms", "ms", "VisionEncoder() construction", 812.25)
    for value in (30.0, 10.0, 20.0):
        metrics.add("vision_overview_ms", "ms", "encode_image", value)
    return {
        "model": {"llm_path": "/m/llm.gguf", "size_gb": 5.0, "backend": "CUDA0"},
        "vision": vision,
        "metrics": metrics.as_dict(),
    }


VISION_INFO = {
    "path": "/m/vision/MiniCPM-o-4_5-vision-F16.gguf",
    "size_gb": 1.0951,
    "backend": "CUDA0",
    "n_layers": 26,
    "n_layers_in_file": 27,
    "image_size": 448,
    "patch_size": 14,
    "images": [
        {"name": "overview", "size": [640, 480], "max_slices": 0, "chunks": [(3, 392, 518)]},
        {
            "name": "2slices",
            "size": [1344, 672],
            "max_slices": 2,
            "chunks": [(3, 322, 630)] + [(3, 448, 448)] * 2,
        },
    ],
}


def test_format_table_lists_the_vision_file_and_its_figures():
    lines = bench.format_table(vision_results(VISION_INFO)).splitlines()
    assert lines[0] == "model /m/llm.gguf (5.00 GB), backend CUDA0"
    assert lines[1] == (
        "vision /m/vision/MiniCPM-o-4_5-vision-F16.gguf (1.10 GB), backend CUDA0, 26 of 27 layers, "
        "slices of 448; images: overview 640x480 (1 chunks), 2slices 1344x672 (3 chunks)"
    )
    assert lines[3].split() == ["vision_load_ms", "ms", "812.25", "812.25", "812.25", "812.25", "1"]
    assert lines[4].split() == ["vision_overview_ms", "ms", "20.00", "20.00", "10.00", "30.00", "3"]


def test_format_table_has_no_vision_line_without_the_vision_file():
    lines = bench.format_table(vision_results(None)).splitlines()
    assert lines[0].startswith("model ") and lines[1].split()[0] == "metric"

"""Image turns through the engine (pipeline.md §3.3): `<image>` + 64 rows + `</image>`, then per slice
`<slice>` + 64 rows + `</slice>`, the slices of one grid row side by side, grid rows separated by "\\n" with
none trailing; image before audio in one user turn; errors leave the session usable. The tiny vision file
slices at its own image_size, 56 px."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_support import GREEDY, N_GPU_LAYERS, EventLog, make_engine
from numeric_helpers import random_rgb

import omni_engine as oe

N_ROWS = 64  # rows per chunk (clip.minicpmv_query_num)
SCALE = 56  # the tiny vision file's clip.vision.image_size
LONG = 1500  # tokens: far more than a test needs before it stops the turn
VISION_FILE = "vision/MiniCPM-o-4_5-vision-F16.gguf"


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def one_token(llm: oe.Llm, text: str) -> int:
    tokens = llm.tokenize(text, True)
    assert len(tokens) == 1, f"{text!r} is not one token: {tokens}"
    return tokens[0]


def image_layout(llm: oe.Llm, grid: tuple[int, int] | None) -> list[int]:
    """The context an image adds; -1 marks an embedding row (pipeline.md §3.3, the PyTorch newline rule)."""
    layout = [one_token(llm, "<image>")] + [-1] * N_ROWS + [one_token(llm, "</image>")]
    if grid is None:
        return layout
    columns, rows = grid
    one_slice = [one_token(llm, "<slice>")] + [-1] * N_ROWS + [one_token(llm, "</slice>")]
    for row in range(rows):
        if row > 0:
            layout += llm.tokenize("\n", False)
        layout += one_slice * columns
    return layout


def start(engine: oe.Engine, log: EventLog) -> int:
    """A text-answer omni session; returns the system prompt's length."""
    engine.start_session(
        oe.SessionOptions(media_type="omni", language="en", speak=False, sampling=GREEDY), log
    )
    return engine.n_past


def answer_to_image(engine: oe.Engine, rgb: np.ndarray, max_slices: int) -> str:
    log = EventLog()
    start(engine, log)
    engine.prefill_image(rgb, max_slices)
    turn = engine.generate(max_new_tokens=12)
    assert engine.wait(30.0)
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}
    return log.text(turn)


def test_engine_reports_the_vision_stage(engine: oe.Engine) -> None:
    assert engine.info["stages"]["vision"] is True
    assert engine.info["vision_path"].endswith(VISION_FILE)


def test_small_image_without_slices_is_wrapped_once(engine: oe.Engine, log: EventLog, llm: oe.Llm) -> None:
    n_system = start(engine, log)
    assert engine.prefill_image(random_rgb(40, 30), max_slices=0) == 66
    assert engine.context_tokens()[n_system:] == image_layout(llm, None)
    assert engine.n_past == n_system + 66


# (width, height, max_slices) -> grid (columns, rows) at the tiny file's 56-px slice size.
SLICED_IMAGES = {
    "wide_2x1_no_newline": ((120, 60, 2), (2, 1)),
    "tall_1x2_one_newline": ((60, 120, 2), (1, 2)),
    "square_3x3_two_newlines": ((200, 200, 9), (3, 3)),
}


@pytest.mark.parametrize("case", SLICED_IMAGES)
def test_sliced_image_layout(engine: oe.Engine, log: EventLog, llm: oe.Llm, case: str) -> None:
    (width, height, max_slices), grid = SLICED_IMAGES[case]
    assert oe.plan_image_slices(width, height, max_slices, scale_resolution=SCALE)["grid"] == grid
    n_system = start(engine, log)
    expected = image_layout(llm, grid)
    assert engine.prefill_image(random_rgb(width, height), max_slices) == len(expected)
    assert engine.context_tokens()[n_system:] == expected
    newline = llm.tokenize("\n", False)
    assert expected[-1] == one_token(llm, "</slice>") and len(newline) == 1
    assert expected.count(newline[0]) == grid[1] - 1


def test_same_image_without_slices_when_max_slices_is_0(
    engine: oe.Engine, log: EventLog, llm: oe.Llm
) -> None:
    n_system = start(engine, log)
    assert engine.prefill_image(random_rgb(200, 200)) == 66  # max_slices defaults to 0
    assert engine.context_tokens()[n_system:] == image_layout(llm, None)


def test_image_then_audio_in_one_user_turn(engine: oe.Engine, log: EventLog, llm: oe.Llm) -> None:
    n_system = start(engine, log)
    engine.prefill_image(random_rgb(40, 30))
    assert engine.prefill_audio(tone(1.0)) == 12
    turn = engine.generate(max_new_tokens=6)
    assert engine.wait(30.0)
    header = llm.tokenize(oe.internals.assistant_header(False))
    audio = [one_token(llm, "<|audio_start|>")] + [-1] * 10 + [one_token(llm, "<|audio_end|>")]
    expected = image_layout(llm, None) + audio + header
    assert engine.context_tokens()[n_system : n_system + len(expected)] == expected
    assert log.stats(turn)["prefill_tokens"] == 66 + 12 + len(header)
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}


def test_image_then_generate_finishes_the_turn(engine: oe.Engine, log: EventLog, llm: oe.Llm) -> None:
    start(engine, log)
    assert engine.prefill_image(random_rgb(120, 60), max_slices=2) == 66 * 3
    turn = engine.generate(max_new_tokens=8)
    assert engine.wait(30.0)
    kinds = [event["type"] for event in log.of_turn(turn)]
    assert kinds[-2:] == ["stats", "end_of_turn"] and set(kinds[:-2]) <= {"text"}
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}
    stats = log.stats(turn)
    assert stats["prefill_tokens"] == 66 * 3 + len(llm.tokenize(oe.internals.assistant_header(False)))
    assert 1 <= stats["decode_tokens"] <= 8
    assert engine.state == "idle"


def test_the_answer_depends_on_the_image(engine: oe.Engine) -> None:
    first, second = (answer_to_image(engine, random_rgb(56, 56, seed=seed), 0) for seed in (1, 2))
    assert first != second


# ---- errors ---------------------------------------------------------------------------------------


def test_image_without_a_session_is_a_state_error(tiny_model_dir: Path) -> None:
    with make_engine(tiny_model_dir, n_ctx=512) as eng:
        with pytest.raises(oe.StateError, match="no session"):
            eng.prefill_image(random_rgb(40, 30))
        log = EventLog()
        n_system = start(eng, log)
        assert eng.prefill_image(random_rgb(40, 30)) == 66
        assert eng.n_past == n_system + 66


def test_image_during_generation_is_busy(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log)
    engine.prefill_text("talk")
    turn = engine.generate(max_new_tokens=LONG)
    with pytest.raises(oe.BusyError):
        engine.prefill_image(random_rgb(40, 30))
    engine.stop()
    assert engine.wait(30.0)
    assert log.end(turn)["reason"] == "stop"
    assert engine.prefill_image(random_rgb(40, 30)) == 66


BAD_IMAGES = {
    "float_pixels": ((np.zeros((30, 40, 3), np.float32), 0), "rgb"),
    "rgba": ((np.zeros((30, 40, 4), np.uint8), 0), "rgb"),
    "grey": ((np.zeros((30, 40), np.uint8), 0), "rgb"),
    "ten_slices": ((random_rgb(40, 30), 10), "max_slices"),
    "negative_slices": ((random_rgb(40, 30), -1), "max_slices"),
}


def test_bad_images_are_refused_and_the_session_stays_usable(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log)
    before = engine.context_tokens()
    for case, ((rgb, max_slices), argument) in BAD_IMAGES.items():
        with pytest.raises(ValueError, match=rf"\b{argument}\b"):
            engine.prefill_image(rgb, max_slices)
        assert engine.context_tokens() == before, case
    assert engine.prefill_image(random_rgb(40, 30)) == 66
    turn = engine.generate(max_new_tokens=3)
    assert engine.wait(30.0)
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}


def test_directory_without_vision_file_has_no_vision_stage(tmp_path: Path, tiny_llm_path: Path) -> None:
    shutil.copy(tiny_llm_path, tmp_path / tiny_llm_path.name)
    with make_engine(tmp_path, n_ctx=512) as eng:
        assert eng.info["stages"]["vision"] is False
        assert eng.info["vision_path"] == ""
        log = EventLog()
        start(eng, log)
        with pytest.raises(oe.StateError, match=f"needs the vision stage: no {VISION_FILE}"):
            eng.prefill_image(random_rgb(40, 30))
        eng.prefill_text("hello")
        turn = eng.generate(max_new_tokens=3)
        assert eng.wait(30.0)
        assert log.end(turn)["reason"] in {"max_tokens", "eos"}


def test_vision_layers_option_runs_one_layer(tiny_model_dir: Path, engine: oe.Engine, llm: oe.Llm) -> None:
    options = oe.EngineOptions(
        model_dir=str(tiny_model_dir), n_ctx=512, n_gpu_layers=N_GPU_LAYERS, n_threads=2
    )
    options.vision_layers = 1
    assert options.vision_layers == 1 and oe.EngineOptions().vision_layers == 0
    rgb = random_rgb(120, 60)
    with oe.Engine(options) as one_layer:
        n_system = start(one_layer, EventLog())
        assert one_layer.prefill_image(rgb, max_slices=2) == 66 * 3
        assert one_layer.context_tokens()[n_system:] == image_layout(llm, (2, 1))
        # Other rows reach the LLM than with both layers (auto on the 2-layer file): the answers differ.
        assert answer_to_image(one_layer, rgb, 2) != answer_to_image(engine, rgb, 2)


def test_vision_layers_beyond_the_file_are_refused(tiny_model_dir: Path) -> None:
    options = oe.EngineOptions(
        model_dir=str(tiny_model_dir), n_ctx=512, n_gpu_layers=N_GPU_LAYERS, n_threads=2
    )
    options.vision_layers = 3
    with pytest.raises(ValueError, match=r"1\.\.2, got 3"):
        oe.Engine(options)

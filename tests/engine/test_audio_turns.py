"""Audio turns through the engine (pipeline.md §3.3): <|audio_start|> + 10 rows per second + <|audio_end|>."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_support import GREEDY, EventLog, make_engine

import omni_engine as oe

AUDIO_START, AUDIO_END = 151697, 151699


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_engine_reports_the_audio_stage(engine: oe.Engine) -> None:
    assert engine.info["stages"]["audio"] is True
    assert engine.info["audio_path"].endswith("audio/MiniCPM-o-4_5-audio-F16.gguf")


@pytest.mark.parametrize(("seconds", "rows"), [(0.05, 1), (1.0, 10), (2.5, 25)])
def test_audio_clip_is_wrapped_once(engine: oe.Engine, log: EventLog, seconds: float, rows: int) -> None:
    engine.start_session(oe.SessionOptions(sampling=GREEDY), log)
    n_system = engine.n_past
    assert engine.prefill_audio(tone(seconds)) == rows + 2
    assert engine.context_tokens()[n_system:] == [AUDIO_START] + [-1] * rows + [AUDIO_END]


def test_audio_then_text_in_one_turn_then_answer(engine: oe.Engine, log: EventLog, llm: oe.Llm) -> None:
    engine.start_session(oe.SessionOptions(sampling=GREEDY), log)
    n_system = engine.n_past
    engine.prefill_audio(tone(1.0))
    engine.prefill_text("What did you hear?")
    turn = engine.generate(max_new_tokens=6)
    assert engine.wait(30.0)
    context = engine.context_tokens()
    text = llm.tokenize("What did you hear?", False)
    header = llm.tokenize(oe.internals.assistant_header(True))
    expected = [AUDIO_START] + [-1] * 10 + [AUDIO_END] + text + header
    assert context[n_system : n_system + len(expected)] == expected
    assert log.stats(turn)["prefill_tokens"] == 12 + len(text) + len(header)
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}


def test_the_answer_depends_on_the_audio(engine: oe.Engine) -> None:
    answers = []
    for freq in (220.0, 3000.0):
        log = EventLog()
        engine.start_session(oe.SessionOptions(sampling=GREEDY), log)
        engine.prefill_audio(tone(1.0, freq) * np.linspace(0.1, 1.0, 16000, dtype=np.float32))
        turn = engine.generate(max_new_tokens=12)
        engine.wait(30.0)
        answers.append(log.text(turn))
    assert answers[0] != answers[1]


def test_bad_audio_is_refused_and_the_session_stays_usable(engine: oe.Engine, log: EventLog) -> None:
    engine.start_session(oe.SessionOptions(sampling=GREEDY), log)
    before = engine.context_tokens()
    with pytest.raises(oe.StateError, match="audio is empty"):
        engine.prefill_audio(np.zeros(0, dtype=np.float32))
    with pytest.raises(oe.StateError, match="NaN or infinite samples .first at sample 3"):
        engine.prefill_audio(np.array([0.0, 0.1, 0.2, np.inf], dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        engine.prefill_audio(np.zeros((2, 100), dtype=np.float32))
    assert engine.context_tokens() == before
    assert engine.prefill_audio(tone(0.5)) == 5 + 2


def test_audio_during_generation_is_busy(engine: oe.Engine, log: EventLog) -> None:
    engine.start_session(oe.SessionOptions(sampling=GREEDY), log)
    engine.prefill_text("talk")
    turn = engine.generate(max_new_tokens=1500)
    with pytest.raises(oe.BusyError):
        engine.prefill_audio(tone(1.0))
    engine.stop()
    engine.wait(30.0)
    assert log.end(turn)["reason"] == "stop"


def test_directory_without_audio_file_has_no_audio_stage(tmp_path: Path, tiny_llm_path: Path) -> None:
    shutil.copy(tiny_llm_path, tmp_path / tiny_llm_path.name)
    with make_engine(tmp_path, n_ctx=512) as eng:
        assert eng.info["stages"]["audio"] is False
        eng.start_session(oe.SessionOptions(sampling=GREEDY), EventLog())
        with pytest.raises(oe.StateError, match="needs the audio encoder"):
            eng.prefill_audio(tone(1.0))


def test_broken_audio_file_names_the_file(tmp_path: Path, tiny_llm_path: Path) -> None:
    shutil.copy(tiny_llm_path, tmp_path / tiny_llm_path.name)
    (tmp_path / "audio").mkdir()
    broken = tmp_path / "audio" / "MiniCPM-o-4_5-audio-F16.gguf"
    broken.write_bytes(b"GGUF garbage")
    with pytest.raises(oe.ModelFileError, match="MiniCPM-o-4_5-audio-F16.gguf"):
        make_engine(tmp_path, n_ctx=512)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_reference_voice_goes_into_the_system_prompt(engine: oe.Engine, llm: oe.Llm, language: str) -> None:
    log = EventLog()
    engine.start_session(oe.SessionOptions(language=language, sampling=GREEDY), log, ref_audio=tone(6.016))
    prompt = oe.internals.system_prompt("audio", language)
    prefix = llm.tokenize(prompt["prefix"])
    suffix = llm.tokenize(prompt["suffix"])
    expected = prefix + [-1] * 61 + suffix  # 6.016 s -> 61 rows (pipeline.md §4.1 table)
    assert engine.context_tokens() == expected
    assert engine.n_keep == len(expected)
    assert prefix[-1] == AUDIO_START and suffix[0] == AUDIO_END
    engine.prefill_text("hello")
    engine.generate(max_new_tokens=3)
    engine.wait(30.0)
    engine.reset()
    assert engine.context_tokens() == expected  # reset keeps the voice


def test_reference_voice_errors(engine: oe.Engine, tiny_model_dir: Path) -> None:
    with pytest.raises(oe.StateError, match="reference voice is empty"):
        engine.start_session(oe.SessionOptions(), EventLog(), ref_audio=np.zeros(0, dtype=np.float32))
    with pytest.raises(oe.StateError, match="reference voice contains NaN"):
        engine.start_session(
            oe.SessionOptions(), EventLog(), ref_audio=np.full(100, np.nan, dtype=np.float32)
        )
    with make_engine(tiny_model_dir, n_ctx=96) as small:
        with pytest.raises(oe.ContextFullError, match="system prompt does not fit"):
            small.start_session(oe.SessionOptions(), EventLog(), ref_audio=tone(30.0))  # 300 rows
        assert small.state == "no_session"
        small.start_session(oe.SessionOptions(language="en", media_type="omni"), EventLog())
        assert small.state == "idle"


def test_reference_voice_needs_the_audio_stage(tmp_path: Path, tiny_llm_path: Path) -> None:
    shutil.copy(tiny_llm_path, tmp_path / tiny_llm_path.name)
    with make_engine(tmp_path, n_ctx=512) as eng:
        with pytest.raises(oe.StateError, match="reference voice needs the audio encoder"):
            eng.start_session(oe.SessionOptions(), EventLog(), ref_audio=tone(1.0))

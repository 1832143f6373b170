"""Speech out through the engine (issue 5): the Token2Wav thread turns each speaking turn's speech codes into
`audio` events (24 kHz int16, one per vocoder window) ahead of the turn's stats and end_of_turn."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_support import GREEDY, N_GPU_LAYERS, EventLog, make_engine

import omni_engine as oe

SAMPLES_PER_TOKEN = 960  # 40 ms at 24 kHz
LEADING_SILENCE = 3  # silence tokens in front of every stream
WINDOW = 28
# Random tiny weights rarely draw the speech EOS, so every chunk runs to max_tokens_per_chunk.
CODES = oe.TtsSamplingParams(seed=11, max_tokens_per_chunk=20)


def speak_session(engine: oe.Engine, log: EventLog, ignore_eos: bool = True) -> None:
    options = oe.SessionOptions(language="en", speak=True, sampling=GREEDY, tts_sampling=CODES)
    options.ignore_eos = ignore_eos
    engine.start_session(options, log)


def spoken_turn(engine: oe.Engine, log: EventLog, text: str, answer_tokens: int) -> int:
    engine.prefill_text(text)
    turn = engine.generate(max_new_tokens=answer_tokens)
    assert engine.wait(120.0)
    return turn


def audio_of(log: EventLog, turn: int) -> list[dict]:
    return [e for e in log.of_turn(turn) if e["type"] == "audio"]


def codes_of(log: EventLog, turn: int) -> list[int]:
    return [c for e in log.of_turn(turn) if e["type"] == "tts_chunk" for c in e["speech_tokens"]]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> oe.Engine:
    eng = make_engine(tiny_model_dir)
    yield eng
    eng.close()


def test_engine_reports_the_token2wav_stage(engine: oe.Engine, tiny_model_dir: Path) -> None:
    assert engine.info["stages"]["token2wav"] is True
    assert engine.info["token2wav_path"] == str(tiny_model_dir / "token2wav-gguf")


def test_a_speaking_turn_streams_its_audio_before_the_end(engine: oe.Engine, log: EventLog) -> None:
    speak_session(engine, log)
    turn = spoken_turn(engine, log, "Tell me a story.", 30)
    events = log.of_turn(turn)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["stats", "end_of_turn"] and events[-1]["reason"] == "max_tokens"
    assert set(kinds[:-2]) == {"text", "tts_chunk", "audio"}
    stats = log.stats(turn)
    assert stats["decode_tokens"] == 30  # ignore_eos: a fixed answer length
    codes = codes_of(log, turn)
    assert stats["speech_tokens"] == len(codes) > 2 * WINDOW
    audio = audio_of(log, turn)
    sizes = [e["pcm"].size for e in audio]
    n_windows = (LEADING_SILENCE + len(codes) - WINDOW) // 25 + 1
    # token2wav.md §5.4: the first window holds back its cross-fade tail, later ones emit 1 s each, the last
    # the rest.
    assert sizes[:n_windows] == [20160] + [24000] * (n_windows - 1)
    assert sum(sizes) == SAMPLES_PER_TOKEN * (LEADING_SILENCE + len(codes)) == stats["audio_samples"]
    assert [e["n_input_tokens"] for e in audio[:n_windows]] == [WINDOW] * n_windows
    assert audio[-1]["n_input_tokens"] == LEADING_SILENCE + len(codes) - 25 * n_windows
    assert all(e["sample_rate"] == 24000 and e["pcm"].dtype == np.int16 for e in audio)
    assert 0 < stats["first_audio_ms"] <= stats["total_ms"] and stats["token2wav_ms"] > 0


def test_the_audio_is_the_token2wav_stream_of_the_turns_codes(tiny_model_dir: Path, log: EventLog) -> None:
    """A fresh engine's first turn equals a standalone Token2Wav (same files and seeds) fed the turn's
    codes."""
    engine = make_engine(tiny_model_dir)
    try:
        speak_session(engine, log)
        turn = spoken_turn(engine, log, "Hello!", 20)
        streamed = np.concatenate([e["pcm"] for e in audio_of(log, turn)])
    finally:
        engine.close()
    alone = oe.Token2Wav(str(tiny_model_dir / "token2wav-gguf"), use_gpu=N_GPU_LAYERS != 0, n_threads=2)
    pcm = alone.push(codes_of(log, turn), True)
    expected = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)  # truncation, as pipeline.md §8.3
    assert streamed.shape == expected.shape
    assert np.max(np.abs(streamed.astype(np.int32) - expected)) <= (0 if N_GPU_LAYERS == 0 else 64)


def test_stop_cuts_the_audio_and_the_next_turn_is_a_fresh_stream(engine: oe.Engine, log: EventLog) -> None:
    speak_session(engine, log)
    engine.prefill_text("Talk for a long time.")
    turn = engine.generate(max_new_tokens=200)
    assert log.first_audio.wait(120.0)
    engine.stop()
    assert engine.wait(120.0)
    events = log.of_turn(turn)
    assert events[-1]["type"] == "end_of_turn" and events[-1]["reason"] == "stop"
    stopped_samples = sum(e["pcm"].size for e in audio_of(log, turn))
    assert stopped_samples < SAMPLES_PER_TOKEN * (LEADING_SILENCE + len(codes_of(log, turn)))
    assert log.stats(turn)["audio_samples"] == stopped_samples

    next_turn = spoken_turn(engine, log, "And now briefly.", 20)
    next_audio = audio_of(log, next_turn)
    assert next_audio[0]["pcm"].size == 20160  # a new stream: the first window again
    assert sum(e["pcm"].size for e in next_audio) == SAMPLES_PER_TOKEN * (
        LEADING_SILENCE + len(codes_of(log, next_turn))
    )


def test_a_silent_turn_has_no_audio(engine: oe.Engine, log: EventLog) -> None:
    options = oe.SessionOptions(language="en", speak=False, sampling=GREEDY)
    engine.start_session(options, log)
    turn = spoken_turn(engine, log, "Just text, please.", 10)
    assert not audio_of(log, turn)
    assert log.stats(turn)["audio_samples"] == 0 and log.stats(turn)["first_audio_ms"] == -1


def test_without_token2wav_files_the_turn_speaks_codes_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "no_t2w"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("token2wav-gguf"))
    engine = make_engine(model_dir)
    log = EventLog()
    try:
        assert engine.info["stages"]["token2wav"] is False and engine.info["token2wav_path"] == ""
        speak_session(engine, log)
        turn = spoken_turn(engine, log, "Hi.", 12)
        kinds = {e["type"] for e in log.of_turn(turn)}
        assert "tts_chunk" in kinds and "audio" not in kinds
    finally:
        engine.close()


def test_the_legacy_token2wav_folder_name_is_accepted(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "legacy"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "token2wav-gguf").rename(model_dir / "token2wav")
    engine = make_engine(model_dir)
    try:
        assert engine.info["token2wav_path"] == str(model_dir / "token2wav")
    finally:
        engine.close()

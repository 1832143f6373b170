"""Speaking turns through the engine (issue 4): the LLM's text is cut into chunks of 10 TTS-valid tokens, each
spoken by the TTS thread as `tts_chunk` events, with the turn's end after the last one."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from engine_support import GREEDY, N_GPU_LAYERS, EventLog, make_engine

import omni_engine as oe

EOS_CODE = 6561
# Random tiny weights rarely draw the speech EOS, so a chunk runs to max_tokens_per_chunk: keep it small.
QUICK = oe.TtsSamplingParams(seed=7, max_tokens_per_chunk=30)


def speak_session(engine: oe.Engine, log: EventLog, tts: oe.TtsSamplingParams = QUICK) -> None:
    engine.start_session(oe.SessionOptions(language="en", speak=True, sampling=GREEDY, tts_sampling=tts), log)


def chunks_of(log: EventLog, turn: int) -> list[dict]:
    return [e for e in log.of_turn(turn) if e["type"] == "tts_chunk"]


def generated_tokens(engine: oe.Engine, first: int) -> list[int]:
    """The answer's tokens: from `first` up to the turn-closing tokens the engine appended."""
    return engine.context_tokens()[first:]


def run_turn(engine: oe.Engine, log: EventLog, text: str, max_new_tokens: int) -> tuple[int, int]:
    engine.prefill_text(text)
    start = engine.n_past
    turn = engine.generate(max_new_tokens=max_new_tokens)
    assert engine.wait(60.0)
    return turn, start


def test_engine_reports_the_tts_stage(engine: oe.Engine) -> None:
    assert engine.info["stages"]["tts"] is True
    assert engine.info["tts_path"].endswith("tts/MiniCPM-o-4_5-tts-F16.gguf")


def test_speaking_turn_events(engine: oe.Engine, llm: oe.Llm, log: EventLog) -> None:
    speak_session(engine, log)
    turn, start = run_turn(engine, log, "Tell me a story.", 45)
    events = log.of_turn(turn)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["stats", "end_of_turn"]
    assert set(kinds[:-2]) == {"text", "tts_chunk", "audio"}  # audio: the Token2Wav stage (test_audio_out.py)
    chunks = chunks_of(log, turn)
    assert [c["chunk_idx"] for c in chunks] == list(range(len(chunks)))
    stats = log.stats(turn)
    answer = generated_tokens(engine, start)[: stats["decode_tokens"]]
    n_valid = sum(oe.internals.is_tts_valid(t) for t in answer)
    assert len(chunks) == n_valid // 10 + 1  # full chunks, then the last (possibly empty) one
    assert "".join(c["text"] for c in chunks) == log.text(turn)
    for chunk in chunks:
        codes = chunk["speech_tokens"]
        assert len(codes) == chunk["n_speech_tokens"] <= QUICK.max_tokens_per_chunk
        assert all(0 <= c < EOS_CODE for c in codes)
    assert stats["speech_tokens"] == sum(c["n_speech_tokens"] for c in chunks)
    assert stats["tts_ms"] > 0
    if stats["speech_tokens"] >= 25:
        assert 0 < stats["first_speech_group_ms"] <= stats["total_ms"]
    else:
        assert stats["first_speech_group_ms"] == -1


def replay_hidden(llm: oe.Llm, context: list[int], batches: list[int], answer: list[int]) -> np.ndarray:
    """The answer's final-norm hidden states, recomputed on the same file with the engine's prefill batches
    (`batches`: their lengths), so the numbers are the engine's own."""
    llm.clear()
    start = 0
    for length in batches:
        llm.eval_tokens(context[start : start + length])
        start += length
    return np.stack([llm.step(token)[1] for token in answer])


def test_speech_equals_the_generator_fed_with_the_same_tokens_and_hidden_states(
    engine: oe.Engine, llm: oe.Llm, log: EventLog, tiny_model_dir: Path
) -> None:
    greedy_tts = oe.TtsSamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens_per_chunk=30)
    speak_session(engine, log, greedy_tts)
    n_system = engine.n_past
    n_user = engine.prefill_text("Say something.")
    turn = engine.generate(max_new_tokens=25)
    assert engine.wait(60.0)
    decoded = log.stats(turn)["decode_tokens"]
    context = engine.context_tokens()
    n_header = len(llm.tokenize(oe.internals.assistant_header(True)))
    first = n_system + n_user + n_header
    answer = context[first : first + decoded]
    hidden = replay_hidden(llm, context, [n_system, n_user, n_header], answer)

    tts = oe.Tts(
        str(tiny_model_dir / "tts/MiniCPM-o-4_5-tts-F16.gguf"),
        str(tiny_model_dir / "tts/MiniCPM-o-4_5-projector-F16.gguf"),
        use_gpu=N_GPU_LAYERS != 0,
    )
    generator = oe.SpeechGenerator(tts, greedy_tts)
    generator.start_turn()
    valid = [i for i, t in enumerate(answer) if oe.internals.is_tts_valid(t)]
    pieces = [valid[i : i + 10] for i in range(0, len(valid) - len(valid) % 10, 10)]
    pieces.append(valid[len(valid) - len(valid) % 10 :])
    expected = [
        generator.speak_chunk(
            [answer[i] for i in idx], hidden[idx].reshape(len(idx), -1), k == len(pieces) - 1
        )
        for k, idx in enumerate(pieces)
    ]
    assert [c["speech_tokens"] for c in chunks_of(log, turn)] == expected


def test_same_seeds_give_the_same_speech(engine: oe.Engine, log: EventLog) -> None:
    speak_session(engine, log)
    speech = []
    for _ in range(2):
        engine.reset()
        turn, _ = run_turn(engine, log, "Once more, please.", 15)
        speech.append([c["speech_tokens"] for c in chunks_of(log, turn)])
    assert speech[0] == speech[1] and sum(map(len, speech[0])) > 0


def test_text_session_does_not_speak(engine: oe.Engine, log: EventLog) -> None:
    engine.start_session(oe.SessionOptions(language="en", speak=False, sampling=GREEDY), log)
    turn, _ = run_turn(engine, log, "Hello.", 15)
    assert chunks_of(log, turn) == []
    assert log.stats(turn)["speech_tokens"] == 0


@pytest.mark.parametrize("how", ["stop", "break_turn"])
def test_stop_during_speech_ends_the_turn_and_the_next_turn_starts_fresh(
    engine: oe.Engine, log: EventLog, how: str
) -> None:
    long_speech = oe.TtsSamplingParams(seed=3, max_tokens_per_chunk=500)
    first_chunk = threading.Event()

    def on_event(event: dict) -> None:
        log(event)
        if event["type"] == "tts_chunk":
            first_chunk.set()

    engine.start_session(
        oe.SessionOptions(language="en", speak=True, sampling=GREEDY, tts_sampling=long_speech), on_event
    )
    engine.prefill_text("Talk for a long time.")
    turn = engine.generate(max_new_tokens=400)
    assert first_chunk.wait(60.0)
    getattr(engine, how)()
    assert engine.wait(30.0)
    assert log.end(turn)["reason"] == ("stop" if how == "stop" else "break")
    kinds = [e["type"] for e in log.of_turn(turn)]
    assert kinds[-2:] == ["stats", "end_of_turn"]
    assert len(chunks_of(log, turn)) < 40  # far fewer than 400 tokens' worth
    engine.prefill_text("And now?")
    next_turn = engine.generate(max_new_tokens=12)
    assert engine.wait(60.0)
    assert [c["chunk_idx"] for c in chunks_of(log, next_turn)][:1] == [0]
    assert log.end(next_turn)["reason"] in {"max_tokens", "eos"}


def test_bad_tts_sampling_is_refused_naming_the_field(engine: oe.Engine, log: EventLog) -> None:
    with pytest.raises(oe.StateError, match="tts_sampling.top_p"):
        oe.TtsSamplingParams(top_p=1.5)
    options = oe.SessionOptions(speak=True, sampling=GREEDY)
    bad = oe.TtsSamplingParams()
    bad.max_tokens_per_chunk = 0
    options.tts_sampling = bad
    with pytest.raises(oe.StateError, match="tts_sampling.max_tokens_per_chunk"):
        engine.start_session(options, log)


def test_directory_without_tts_answers_in_text(tmp_path: Path, tiny_llm_path: Path) -> None:
    shutil.copy(tiny_llm_path, tmp_path / tiny_llm_path.name)
    engine = make_engine(tmp_path)
    try:
        assert engine.info["stages"]["tts"] is False and engine.info["tts_path"] == ""
        log = EventLog()
        speak_session(engine, log)
        turn, _ = run_turn(engine, log, "Hello.", 8)
        assert chunks_of(log, turn) == [] and log.text(turn)
    finally:
        engine.close()

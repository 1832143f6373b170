"""A turn through the real engine on the tiny model: event order, stop/break/reset from other threads,
busy and state errors, several engines in one process."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from engine_support import GREEDY, EventLog, make_engine

import omni_engine as oe

LONG = 1500  # tokens: far more than the time a test waits before stopping


def start(engine: oe.Engine, log: EventLog, **options) -> None:
    options.setdefault("sampling", GREEDY)
    # The text path; tests/engine/test_speech_turns.py covers speaking turns.
    options.setdefault("speak", False)
    engine.start_session(oe.SessionOptions(**options), log)


def test_text_turn_events_in_order(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log, language="en")
    assert engine.state == "idle"
    assert engine.prefill_text("Hello there, how are you?") > 0
    turn = engine.generate(max_new_tokens=16)
    assert engine.wait(30.0)
    events = log.of_turn(turn)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["stats", "end_of_turn"]
    assert set(kinds[:-2]) == {"text"}
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}
    stats = log.stats(turn)
    assert 1 <= stats["decode_tokens"] <= 16
    assert stats["prefill_tokens"] > 0 and stats["ttft_ms"] > 0 and stats["total_ms"] >= stats["decode_ms"]
    assert engine.state == "idle"


def test_text_equals_pieces_of_generated_tokens(engine: oe.Engine, llm: oe.Llm, log: EventLog) -> None:
    start(engine, log, language="en", speak=False)
    engine.prefill_text("Tell me something.")
    before = len(engine.context_tokens())
    header = llm.tokenize(oe.internals.assistant_header(False))
    turn = engine.generate(max_new_tokens=24)
    engine.wait(30.0)
    context = engine.context_tokens()
    close = llm.tokenize(oe.internals.turn_close(False))
    generated = context[before + len(header) : len(context) - len(close)]
    assert context[len(context) - len(close) :] == close
    assert len(generated) == log.stats(turn)["decode_tokens"]
    visible = b"".join(llm.token_to_piece(t) for t in generated if t < 151643)
    assert log.text(turn) == visible.decode("utf-8", errors="replace")


def test_greedy_is_deterministic_across_sessions(engine: oe.Engine) -> None:
    texts = []
    for _ in range(2):
        log = EventLog()
        start(engine, log, language="zh")
        engine.prefill_text("你好，请介绍一下你自己。")
        turn = engine.generate(max_new_tokens=12)
        engine.wait(30.0)
        texts.append(log.text(turn))
    assert texts[0] and texts[0] == texts[1]


def test_seeded_sampling_is_reproducible(engine: oe.Engine) -> None:
    texts = []
    for _ in range(2):
        log = EventLog()
        start(engine, log, sampling=oe.SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=1234))
        engine.prefill_text("hi")
        turn = engine.generate(max_new_tokens=12)
        engine.wait(30.0)
        texts.append(log.text(turn))
    assert texts[0] == texts[1]


def test_multi_turn_keeps_history(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log)
    n_keep = engine.n_keep
    assert engine.n_past == n_keep
    turns = []
    for question in ["first question", "second question"]:
        engine.prefill_text(question)
        turns.append(engine.generate(max_new_tokens=8))
        engine.wait(30.0)
    assert turns[1] == turns[0] + 1
    assert engine.n_past > n_keep + 2 * 8
    assert len(engine.context_tokens()) == engine.n_past


@pytest.mark.parametrize(("method", "reason"), [("stop", "stop"), ("break_turn", "break")])
def test_interrupt_from_another_thread(
    engine: oe.Engine, llm: oe.Llm, log: EventLog, method: str, reason: str
) -> None:
    start(engine, log, speak=True)  # the TTS thread is speaking too when the interrupt comes
    engine.prefill_text("talk for a long time")
    turn = engine.generate(max_new_tokens=LONG)
    assert log.first_text.wait(30.0)
    interrupter = threading.Thread(target=getattr(engine, method))
    interrupter.start()
    interrupter.join()
    assert engine.wait(30.0)
    assert log.end(turn)["reason"] == reason
    assert log.stats(turn)["decode_tokens"] < LONG
    kinds = [e["type"] for e in log.of_turn(turn)]
    assert kinds[-1] == "end_of_turn" and kinds.count("end_of_turn") == 1
    # The interrupted answer is closed like a finished one and the next turn works.
    close = llm.tokenize(oe.internals.turn_close(True))
    assert close[:2] == [151704, 151645]  # <|tts_eos|><|im_end|>
    assert engine.context_tokens()[-len(close) :] == close
    engine.prefill_text("next")
    nxt = engine.generate(max_new_tokens=4)
    engine.wait(30.0)
    assert log.end(nxt)["reason"] in {"max_tokens", "eos"}


def test_stop_right_after_generate_is_never_lost(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log)
    for _ in range(10):
        turn = engine.generate(max_new_tokens=LONG)
        engine.stop()
        assert engine.wait(30.0)
        assert log.end(turn)["reason"] == "stop"


def test_stop_and_break_when_idle_do_not_touch_the_next_turn(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log)
    engine.stop()
    engine.break_turn()
    engine.prefill_text("question")
    turn = engine.generate(max_new_tokens=5)
    engine.wait(30.0)
    assert log.end(turn)["reason"] in {"max_tokens", "eos"}


def test_reset_during_generation_returns_to_the_system_prompt(engine: oe.Engine, log: EventLog) -> None:
    start(engine, log)
    system = engine.context_tokens()
    engine.prefill_text("talk")
    turn = engine.generate(max_new_tokens=LONG)
    assert log.first_text.wait(30.0)
    resetter = threading.Thread(target=engine.reset)
    resetter.start()
    resetter.join(60.0)
    assert not resetter.is_alive()
    assert log.end(turn)["reason"] == "stop"
    assert engine.n_past == engine.n_keep == len(system)
    assert engine.context_tokens() == system
    engine.prefill_text("again")
    engine.wait(1.0)
    nxt = engine.generate(max_new_tokens=3)
    engine.wait(30.0)
    assert log.end(nxt)["reason"] in {"max_tokens", "eos"}


def test_calls_out_of_order_raise_typed_errors(tiny_model_dir: Path, log: EventLog) -> None:
    with make_engine(tiny_model_dir, n_ctx=1024) as eng:
        assert eng.state == "no_session"
        with pytest.raises(oe.StateError, match="no session"):
            eng.prefill_text("hi")
        with pytest.raises(oe.StateError, match="no session"):
            eng.generate()
        with pytest.raises(oe.StateError, match="duplex"):
            eng.start_session(oe.SessionOptions(duplex=True), log)
        with pytest.raises(oe.StateError, match="language"):
            eng.start_session(oe.SessionOptions(language="fr"), log)
        with pytest.raises(oe.StateError, match="media_type"):
            eng.start_session(oe.SessionOptions(media_type="video"), log)
        with pytest.raises(oe.StateError, match="top_p"):
            oe.SamplingParams(top_p=1.5)
        start(eng, log)
        with pytest.raises(oe.StateError, match="empty"):
            eng.prefill_text("")
        eng.prefill_text("hi")
        turn = eng.generate(max_new_tokens=LONG)
        with pytest.raises(oe.BusyError):
            eng.prefill_text("more")
        with pytest.raises(oe.BusyError):
            eng.generate()
        eng.stop()
        eng.wait(30.0)
        assert log.end(turn)["reason"] == "stop"
    with pytest.raises(oe.StateError, match="closed"):
        eng.generate()


def test_callback_exceptions_do_not_break_the_engine(engine: oe.Engine) -> None:
    seen: list[str] = []

    def broken(event: dict) -> None:
        seen.append(event["type"])
        raise RuntimeError("callback bug")

    engine.start_session(oe.SessionOptions(sampling=GREEDY), broken)
    engine.prefill_text("hi")
    engine.generate(max_new_tokens=3)
    assert engine.wait(30.0)
    assert seen[-1] == "end_of_turn"


def test_two_engines_in_one_process_run_concurrently(tiny_model_dir: Path) -> None:
    engines = [make_engine(tiny_model_dir, n_ctx=1024) for _ in range(2)]
    logs = [EventLog(), EventLog()]
    turns = []
    for eng, log in zip(engines, logs, strict=True):
        start(eng, log)
        eng.prefill_text("same question")
    for eng in engines:
        turns.append(eng.generate(max_new_tokens=20))
    for eng in engines:
        assert eng.wait(60.0)
    assert logs[0].text(turns[0]) == logs[1].text(turns[1]) != ""
    for eng in engines:
        eng.close()

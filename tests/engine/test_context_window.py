"""The KV sliding window (pipeline.md §6.5): plan, then a long conversation in a small context."""

from __future__ import annotations

from pathlib import Path

from engine_support import GREEDY, EventLog, make_engine

import omni_engine as oe

plan = oe.internals.plan_slide


def test_plan_keeps_newest_rounds_within_budget() -> None:
    # system prompt 40; rounds start at 40, 100, 180; the open round starts at 250; n_past 260
    assert plan(40, 260, [40, 100, 180], 250, 2048) == (40, 40 + (260 - 40) // 2)  # all fit: halve
    assert plan(40, 260, [40, 100, 180], 250, 160) == (40, 100)  # keep rounds from 100 (150 tokens)
    assert plan(40, 260, [40, 100, 180], 250, 70) == (40, 180)  # keep only the newest round
    assert plan(40, 260, [40, 100, 180], 250, 10) == (40, 250)  # no complete round fits: drop them all


def test_plan_without_rounds_drops_half() -> None:
    assert plan(30, 130, [], 30, 2048) == (30, 80)


def test_long_conversation_slides_and_keeps_the_system_prompt(tiny_model_dir: Path, llm: oe.Llm) -> None:
    header = llm.tokenize(oe.internals.assistant_header(True))
    close = llm.tokenize(oe.internals.turn_close(True))
    with make_engine(tiny_model_dir, n_ctx=256) as eng:
        log = EventLog()
        eng.start_session(oe.SessionOptions(sampling=GREEDY, max_preserved_context=96), log)
        system = eng.context_tokens()
        conversation: list[int] = []  # everything after the system prompt, never trimmed
        slid = False
        for i in range(12):
            question = f"question number {i} with a few more words to fill the context"
            eng.prefill_text(question)
            turn = eng.generate(max_new_tokens=24)
            assert eng.wait(30.0)
            assert log.end(turn)["reason"] in {"max_tokens", "eos"}, log.of_turn(turn)
            context = eng.context_tokens()
            n_generated = log.stats(turn)["decode_tokens"]
            generated = context[len(context) - len(close) - n_generated : len(context) - len(close)]
            conversation += llm.tokenize(question, False) + header + generated + close
            assert eng.n_past == len(context) <= 256
            assert context[: len(system)] == system
            kept = context[len(system) :]
            assert kept == conversation[len(conversation) - len(kept) :]
            slid = slid or len(kept) < len(conversation)
        assert slid and len(system) + len(conversation) > 2 * 256


def test_input_larger_than_the_context_is_refused(tiny_model_dir: Path) -> None:
    with make_engine(tiny_model_dir, n_ctx=128) as eng:
        eng.start_session(oe.SessionOptions(sampling=GREEDY), EventLog())
        try:
            eng.prefill_text("word " * 400)
        except oe.ContextFullError as err:
            assert "does not fit the context" in str(err)
        else:
            raise AssertionError("a 400-token prefill fit into a 128-token context")
        assert eng.n_past <= 128


def test_refused_input_leaves_the_conversation_untouched(tiny_model_dir: Path) -> None:
    with make_engine(tiny_model_dir, n_ctx=256) as eng:
        eng.start_session(oe.SessionOptions(sampling=GREEDY, language="en"), EventLog())
        eng.prefill_text("some history " * 20)
        before = eng.context_tokens()
        too_big = 256 - eng.n_keep + 1  # cannot fit even in an empty conversation
        try:
            eng.prefill_text("a" * (too_big * 8))
        except oe.ContextFullError as err:
            assert "does not fit the context" in str(err)
        else:
            raise AssertionError("an input larger than the whole context was accepted")
        assert eng.context_tokens() == before


def test_input_that_fits_after_evicting_history_is_accepted(tiny_model_dir: Path, llm: oe.Llm) -> None:
    with make_engine(tiny_model_dir, n_ctx=256) as eng:
        log = EventLog()
        eng.start_session(oe.SessionOptions(sampling=GREEDY, language="en"), log)
        for i in range(3):
            eng.prefill_text(f"round {i} " * 10)
            eng.generate(max_new_tokens=10)
            eng.wait(30.0)
        target = 256 - eng.n_keep - 10  # fits only once nearly all history is gone
        big = " hello" * target
        while len(llm.tokenize(big, False)) > target:
            big = big[: len(big) - len(" hello")]
        n_big = len(llm.tokenize(big, False))
        assert eng.n_past + n_big > 256 and eng.n_keep + n_big <= 256
        assert eng.prefill_text(big) == n_big
        assert eng.n_past <= 256

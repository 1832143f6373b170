"""Unit test of the asyncio plumbing of omni_app.engine.OmniEngine, using a FAKE engine module.

The fake only mimics the threading contract of omni_engine (events delivered from a separate thread,
text* -> stats -> end_of_turn, stop() from any thread). It says nothing about the real engine; the real
engine is exercised end to end in tests/api and tests/engine.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from omni_app.engine import (
    BusyError,
    EngineConfig,
    FeatureUnavailableError,
    NoSessionError,
    NotInitializedError,
    OmniEngine,
    SessionConfig,
)


class FakeEngineError(RuntimeError):
    pass


class FakeStateError(FakeEngineError):
    pass


class FakeBusyError(FakeEngineError):
    pass


class FakeOptions:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeSampling:
    def __init__(self, **kwargs):
        defaults = dict(
            temperature=0.7,
            top_k=100,
            top_p=0.8,
            min_p=0.0,
            repetition_penalty=1.02,
            repetition_window=128,
            length_penalty=1.0,
            seed=-1,
        )
        self.__dict__.update({**defaults, **kwargs})


class FakeTtsSampling:
    def __init__(self, **kwargs):
        defaults = dict(
            temperature=0.8,
            top_p=0.85,
            top_k=25,
            repetition_penalty=1.05,
            penalty_window=16,
            min_keep=3,
            max_tokens_per_chunk=500,
            seed=-1,
        )
        self.__dict__.update({**defaults, **kwargs})


class FakeSessionOptions(FakeOptions):
    def __init__(self, **kwargs):
        super().__init__(max_new_tokens=2048, **kwargs)


class FakeEngine:
    """Emits events from its own thread. `hold_after` text events, then waits for stop() (if set)."""

    instances: list[FakeEngine] = []
    hold_after: int | None = None
    drop_end_of_turn = False

    def __init__(self, options):
        self.options = options
        self.info = {"stages": {"llm": True, "audio": False}}
        self.state = "no_session"
        self.n_past = 0
        self.n_keep = 0
        self.on_event = None
        self.turn = 0
        self.stop_requested = threading.Event()
        self.worker: threading.Thread | None = None
        self.calls: list[str] = []
        FakeEngine.instances.append(self)

    def start_session(self, options, on_event):
        if options.duplex:
            raise FakeStateError("duplex mode is not available yet")
        self._stop_and_join()
        self.on_event, self.state, self.n_past, self.n_keep = on_event, "idle", 10, 10

    def prefill_text(self, text):
        if self.state == "generating":
            raise FakeBusyError("busy")
        self.n_past += len(text)
        return len(text)

    def generate(self, max_new_tokens, length_penalty):
        if self.state == "generating":
            raise FakeBusyError("busy")
        self.calls.append(f"generate({max_new_tokens}, {length_penalty})")
        self.turn += 1
        self.state = "generating"
        self.stop_requested.clear()
        self.worker = threading.Thread(target=self._run, args=(self.turn, max_new_tokens))
        self.worker.start()
        return self.turn

    def _run(self, turn, max_new_tokens):
        limit = 3 if max_new_tokens < 0 else max_new_tokens
        reason = "max_tokens"
        for i in range(limit):
            if self.stop_requested.is_set():
                reason = "stop"
                break
            self.on_event({"type": "text", "turn": turn, "text": f"t{i}"})
            if self.hold_after is not None and i + 1 == self.hold_after:
                self.stop_requested.wait(timeout=10)
        self.on_event({"type": "stats", "turn": turn, "decode_tokens": limit})
        self.state = "idle"
        if not self.drop_end_of_turn:
            self.on_event({"type": "end_of_turn", "turn": turn, "reason": reason})

    def _stop_and_join(self):
        self.stop_requested.set()
        if self.worker is not None:
            self.worker.join()

    def wait(self, timeout=-1):
        if self.worker is not None:
            self.worker.join(None if timeout < 0 else timeout)
        return self.state != "generating"

    def stop(self):
        self.calls.append("stop")
        self._stop_and_join()

    def break_turn(self):
        self.calls.append("break_turn")
        self._stop_and_join()

    def reset(self):
        self._stop_and_join()
        self.n_past = self.n_keep

    def close(self):
        self._stop_and_join()


def fake_module():
    return SimpleNamespace(
        Engine=FakeEngine,
        EngineOptions=FakeOptions,
        SessionOptions=FakeSessionOptions,
        SamplingParams=FakeSampling,
        TtsSamplingParams=FakeTtsSampling,
        EngineError=FakeEngineError,
        StateError=FakeStateError,
        BusyError=FakeBusyError,
    )


@pytest.fixture(autouse=True)
def reset_fake():
    FakeEngine.instances.clear()
    FakeEngine.hold_after = None
    FakeEngine.drop_end_of_turn = False


def make_adapter(**kwargs) -> OmniEngine:
    return OmniEngine(EngineConfig(model_dir=Path("/models")), module=fake_module(), **kwargs)


async def started(adapter: OmniEngine, **session) -> OmniEngine:
    await adapter.load()
    await adapter.start_session(SessionConfig(**session))
    return adapter


async def collect(stream) -> list[dict]:
    return [event async for event in stream.events()]


def test_concurrent_loads_build_one_engine():
    async def main():
        adapter = make_adapter()
        results = await asyncio.gather(*(adapter.load() for _ in range(5)))
        return adapter, results

    adapter, results = asyncio.run(main())
    assert len(FakeEngine.instances) == 1
    assert sorted(results) == [False, False, False, False, True]
    assert adapter.load_count == 1


def test_calls_before_init_and_session_raise_typed_errors():
    async def main():
        adapter = make_adapter()
        with pytest.raises(NotInitializedError, match="engine not initialized"):
            await adapter.prefill_text("hi")
        await adapter.load()
        with pytest.raises(NoSessionError):
            await adapter.begin_turn()

    asyncio.run(main())


def test_events_from_engine_thread_arrive_in_order_and_turn_ends():
    async def main():
        adapter = await started(make_adapter(), sampling={"temperature": 0.0}, tts_sampling={"seed": 4})
        assert adapter.session["sampling"]["temperature"] == 0.0
        assert adapter.session["tts_sampling"]["seed"] == 4
        assert adapter.session["tts_sampling"]["top_p"] == 0.85  # the engine's default, read back
        assert await adapter.prefill_text("abc") == 3
        stream = await adapter.begin_turn(4, length_penalty=1.5)
        events = await collect(stream)
        return adapter, stream, events

    adapter, stream, events = asyncio.run(main())
    assert [e["type"] for e in events] == ["text"] * 4 + ["stats", "end_of_turn"]
    assert [e["text"] for e in events[:4]] == ["t0", "t1", "t2", "t3"]
    assert events[-1]["reason"] == "max_tokens"
    assert stream.finished and stream.turn_id == 1
    assert not adapter.generating and adapter.turns_completed == 1
    assert FakeEngine.instances[0].calls == ["generate(4, 1.5)"]  # per-answer limits reach the engine


def test_second_turn_and_prefill_during_a_turn_are_busy():
    FakeEngine.hold_after = 1

    async def main():
        adapter = await started(make_adapter())
        stream = await adapter.begin_turn(50)
        events = stream.events()
        first = await events.__anext__()
        with pytest.raises(BusyError, match="already|another answer"):
            await adapter.begin_turn()
        with pytest.raises(BusyError, match="add input"):
            await adapter.prefill_text("x")
        assert await adapter.stop() is True
        rest = [e async for e in events]
        return first, rest, adapter

    first, rest, adapter = asyncio.run(main())
    assert first["type"] == "text"
    assert [e["type"] for e in rest] == ["stats", "end_of_turn"]
    assert rest[-1]["reason"] == "stop"
    assert not adapter.generating


def test_abandoned_stream_stops_the_engine_and_frees_the_adapter():
    FakeEngine.hold_after = 1

    async def main():
        adapter = await started(make_adapter())
        stream = await adapter.begin_turn(50)
        events = stream.events()
        await events.__anext__()
        await events.aclose()  # what a client disconnect does to the SSE generator
        await stream.cancel()  # the response's background task
        assert not adapter.generating
        FakeEngine.hold_after = None
        follow_up = await collect(await adapter.begin_turn(2))
        return follow_up

    follow_up = asyncio.run(main())
    assert "stop" in FakeEngine.instances[0].calls
    assert [e["type"] for e in follow_up] == ["text", "text", "stats", "end_of_turn"]


def test_missing_end_of_turn_is_reported_as_engine_bug():
    FakeEngine.hold_after = 1
    FakeEngine.drop_end_of_turn = True

    async def main():
        adapter = await started(make_adapter(turn_end_timeout_s=0.2))
        stream = await adapter.begin_turn(50)
        events = stream.events()
        await events.__anext__()
        await adapter.stop()
        return [e async for e in events], adapter

    rest, adapter = asyncio.run(main())
    assert [e["type"] for e in rest] == ["stats", "error", "end_of_turn"]
    assert "engine bug" in rest[1]["message"]
    assert rest[-1]["reason"] == "error"
    assert not adapter.generating


def test_duplex_state_error_is_feature_unavailable():
    async def main():
        adapter = make_adapter()
        await adapter.load()
        with pytest.raises(FeatureUnavailableError, match="duplex mode is not available yet"):
            await adapter.start_session(SessionConfig(duplex=True))
        assert adapter.session is None

    asyncio.run(main())


def test_stop_when_idle_is_a_no_op():
    async def main():
        adapter = await started(make_adapter())
        return await adapter.stop(), await adapter.break_turn()

    assert asyncio.run(main()) == (False, False)


def test_unknown_sampling_parameter_is_rejected():
    with pytest.raises(ValueError, match="temprature"):
        SessionConfig(sampling={"temprature": 0.5})
    with pytest.raises(ValueError, match=r"unknown TTS sampling parameter\(s\): top_n"):
        SessionConfig(tts_sampling={"top_n": 5})

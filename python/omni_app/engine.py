"""Adapter over ``omni_engine.Engine`` (architecture.md §3).

Two front ends share the option building and the event contract of the extension:

* :class:`OmniEngine` — asyncio adapter used by the server: one engine, one session, at most one turn at a
  time. Engine events arrive on an engine-owned thread and are handed to the event loop with
  ``loop.call_soon_threadsafe``; long engine calls run in worker threads so the loop never blocks.
* :class:`Assistant` — small blocking API for scripts and notebooks (``chat`` / ``stream``).

The extension is imported lazily so that ``omni_app`` imports (and the server starts and reports the
problem) even when ``omni_engine`` has not been built.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger("omni_app.engine")
engine_log = logging.getLogger("omni_engine")

END_OF_TURN = "end_of_turn"
SAMPLING_FIELDS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "repetition_window",
    "length_penalty",
    "seed",
)
TTS_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "penalty_window",
    "min_keep",
    "max_tokens_per_chunk",
    "seed",
)
# How long stop/reset/start_session wait for the engine's end_of_turn before declaring an engine bug.
TURN_END_TIMEOUT_S = 10.0
# Image slices (pipeline.md §5): overview only by default, 2 slices in "high detail" mode.
DEFAULT_MAX_SLICES = 0
HIGH_QUALITY_MAX_SLICES = 2


class OmniAppError(Exception):
    """Base class of the adapter's typed errors (the server maps each to an HTTP status)."""


class EngineUnavailableError(OmniAppError):
    """The ``omni_engine`` extension cannot be imported."""


class ModelLoadError(OmniAppError):
    """Loading the model directory failed."""


class NotInitializedError(OmniAppError):
    """No engine is loaded yet."""


class NoSessionError(OmniAppError):
    """The engine is loaded but no session is active."""


class BusyError(OmniAppError):
    """The call is not allowed while an answer is being generated."""


class FeatureUnavailableError(OmniAppError):
    """The request needs a stage or mode this build/model does not provide."""


class ContextFullError(OmniAppError):
    """The input does not fit the LLM context."""


class InvalidInputError(OmniAppError):
    """The engine refused the input itself (e.g. empty audio or NaN samples)."""


def import_engine_module() -> ModuleType:
    """Import the C++ extension, turning an ImportError into a message that says what to do."""
    try:
        return importlib.import_module("omni_engine")
    except ImportError as exc:
        raise EngineUnavailableError(
            f"the omni_engine extension is not available ({exc}); build it with "
            "`pip install -e . --no-build-isolation` in the repository root"
        ) from exc


def install_engine_logging(level: int = logging.INFO) -> bool:
    """Route the engine's log lines (``level`` and above) into the ``omni_engine`` logger.
    Returns False if the extension is absent."""
    try:
        module = import_engine_module()
    except EngineUnavailableError:
        return False
    names = ((logging.DEBUG, "debug"), (logging.INFO, "info"), (logging.WARNING, "warning"))
    module.set_log_level(next((name for limit, name in names if level <= limit), "error"))
    module.set_log_callback(_forward_engine_log)
    return True


def _forward_engine_log(level: str, message: str) -> None:
    levels = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "warning": logging.WARNING,
    }
    engine_log.log(levels.get(level.lower(), logging.ERROR), "%s", message.rstrip())


@dataclass(frozen=True)
class EngineConfig:
    """What ``omni_engine.EngineOptions`` needs to load a model directory."""

    model_dir: Path
    llm_file: str = ""
    n_ctx: int = 4096
    n_batch: int = 512
    n_gpu_layers: int = -1
    n_threads: int = 0


@dataclass(frozen=True)
class SessionConfig:
    """One conversation's settings; ``None`` / missing sampling keys mean "engine default"."""

    media_type: str = "audio"
    duplex: bool = False
    language: str = "zh"
    speak: bool = True
    max_new_tokens: int | None = None
    sampling: dict[str, float | int] = field(default_factory=dict)
    tts_sampling: dict[str, float | int] = field(default_factory=dict)
    high_quality_mode: bool = False  # images default to HIGH_QUALITY_MAX_SLICES slices instead of none

    def __post_init__(self) -> None:
        _refuse_unknown(self.sampling, SAMPLING_FIELDS, "sampling")
        _refuse_unknown(self.tts_sampling, TTS_SAMPLING_FIELDS, "TTS sampling")

    @property
    def max_slices(self) -> int:
        """The session's default slice count of an image (a prefill may ask for another)."""
        return HIGH_QUALITY_MAX_SLICES if self.high_quality_mode else DEFAULT_MAX_SLICES


def _refuse_unknown(given: dict[str, float | int], known: tuple[str, ...], what: str) -> None:
    unknown = set(given) - set(known)
    if unknown:
        raise ValueError(f"unknown {what} parameter(s): {', '.join(sorted(unknown))}")


def build_engine_options(module: ModuleType, config: EngineConfig) -> Any:
    return module.EngineOptions(
        model_dir=str(config.model_dir),
        llm_file=config.llm_file,
        n_ctx=config.n_ctx,
        n_batch=config.n_batch,
        n_gpu_layers=config.n_gpu_layers,
        n_threads=config.n_threads,
    )


def build_session_options(module: ModuleType, session: SessionConfig) -> Any:
    options = module.SessionOptions(
        media_type=session.media_type,
        duplex=session.duplex,
        language=session.language,
        speak=session.speak,
        sampling=module.SamplingParams(**session.sampling),
        tts_sampling=module.TtsSamplingParams(**session.tts_sampling),
    )
    if session.max_new_tokens is not None:
        options.max_new_tokens = session.max_new_tokens
    return options


def describe_session_options(options: Any) -> dict[str, Any]:
    """The settings the engine actually got, read back from the options object."""
    return {
        "media_type": options.media_type,
        "duplex": options.duplex,
        "language": options.language,
        "speak": options.speak,
        "max_new_tokens": options.max_new_tokens,
        "sampling": _read_params(options.sampling, SAMPLING_FIELDS),
        "tts_sampling": _read_params(options.tts_sampling, TTS_SAMPLING_FIELDS),
    }


def _read_params(params: Any, names: tuple[str, ...]) -> dict[str, float | int]:
    """The engine keeps float settings as float32: 0.85 reads back as 0.8500000238...; report the shortest
    decimal that is the same float32 (0.85), which is what the client asked for."""
    values: dict[str, float | int] = {}
    for name in names:
        value = getattr(params, name)
        values[name] = float(str(np.float32(value))) if isinstance(value, float) else value
    return values


@dataclass(frozen=True)
class PrefillResult:
    """What one prefill added to the context."""

    n_audio_positions: int = 0
    n_text_tokens: int = 0
    n_image_positions: int = 0

    @property
    def n_tokens(self) -> int:
        return self.n_image_positions + self.n_audio_positions + self.n_text_tokens


@dataclass
class _Turn:
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    turn_id: int | None = None


class TurnStream:
    """The events of one answer, ending with (and including) its ``end_of_turn`` event."""

    def __init__(self, owner: OmniEngine, turn: _Turn) -> None:
        self._owner = owner
        self._turn = turn

    @property
    def turn_id(self) -> int | None:
        return self._turn.turn_id

    @property
    def finished(self) -> bool:
        return self._turn.finished.is_set()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                event = await self._turn.queue.get()
                yield event
                if event["type"] == END_OF_TURN:
                    return
        finally:
            if not self.finished:
                # Consumer went away (client disconnect): end the answer. Cannot await here while cancelled.
                self._owner.request_stop_nowait()

    async def cancel(self) -> None:
        """End the turn if it is still running and wait for the engine to confirm."""
        if not self.finished:
            await self._owner.stop()


class OmniEngine:
    """One ``omni_engine.Engine``, one session, one turn at a time, as an asyncio API."""

    def __init__(
        self,
        config: EngineConfig,
        module: ModuleType | None = None,
        turn_end_timeout_s: float = TURN_END_TIMEOUT_S,
    ) -> None:
        self.config = config
        self._module = module
        self._engine: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load_lock = asyncio.Lock()
        self._session_lock = asyncio.Lock()  # serialises start_session / prefill / generate start / reset
        self._turn: _Turn | None = None
        self._turn_end_timeout_s = turn_end_timeout_s
        self.loading = False
        self.load_error: str | None = None
        self.load_count = 0
        self.session: dict[str, Any] | None = None
        self.prefill_count = 0
        self.turns_completed = 0

    # ----- state -------------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self._engine is not None

    @property
    def generating(self) -> bool:
        return self._turn is not None

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._engine.info) if self._engine is not None else {}

    def stages(self) -> dict[str, bool]:
        return {name: bool(on) for name, on in self.info.get("stages", {}).items()}

    def status(self) -> dict[str, Any]:
        engine = self._engine
        if engine is None:
            return {"state": "not_initialized"}
        return {
            "state": engine.state,
            "n_past": engine.n_past,
            "n_keep": engine.n_keep,
            "turns": self.turns_completed,
            "prefills": self.prefill_count,
        }

    def module(self) -> ModuleType:
        if self._module is None:
            self._module = import_engine_module()
        return self._module

    # ----- lifecycle ---------------------------------------------------------------------------------
    async def load(self) -> bool:
        """Load the models once (concurrent callers wait for that load); True if this call loaded them."""
        async with self._load_lock:
            if self._engine is not None:
                return False
            module = self.module()
            self.loading = True
            self.load_error = None
            try:
                options = build_engine_options(module, self.config)
                log.info("loading models from %s", self.config.model_dir)
                self._engine = await asyncio.to_thread(module.Engine, options)
            except module.EngineError as exc:
                self.load_error = str(exc)
                raise ModelLoadError(f"failed to load models from {self.config.model_dir}: {exc}") from exc
            finally:
                self.loading = False
            self.load_count += 1
            log.info("models loaded: %s", self._engine.info)
            return True

    async def start_session(
        self, session: SessionConfig, ref_audio: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Start (or restart) the conversation; any running answer is stopped. Returns the actual settings.

        ``ref_audio`` (1-D float32, 16 kHz mono) is the reference voice placed in the system prompt; without
        it the engine uses its text-only system prompt. If the engine refuses the session there is none
        afterwards (the previous one is gone too); another call starts one."""
        engine = self._require_engine()
        module = self.module()
        self._loop = asyncio.get_running_loop()
        voice = None if ref_audio is None else np.ascontiguousarray(ref_audio, dtype=np.float32)
        voice_args = () if voice is None else (voice,)
        context_full = getattr(module, "ContextFullError", ())  # a StateError subclass
        async with self._session_lock:
            options = build_session_options(module, session)
            running = self._turn
            self.session = None
            try:
                await asyncio.to_thread(engine.start_session, options, self._on_engine_event, *voice_args)
            except context_full as exc:
                raise ContextFullError(str(exc)) from exc
            except module.StateError as exc:
                if session.duplex:
                    raise FeatureUnavailableError(str(exc)) from exc
                if voice is not None:
                    raise InvalidInputError(str(exc)) from exc
                raise NoSessionError(str(exc)) from exc
            finally:
                if running is not None:
                    await self._await_turn_end(running, "start_session")
            self.session = describe_session_options(options)
            self.session["high_quality_mode"] = session.high_quality_mode
            self.session["max_slices"] = session.max_slices
            self.prefill_count = 0
        return self.session

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)

    # ----- conversation ------------------------------------------------------------------------------
    async def prefill_text(self, text: str) -> int:
        return (await self.prefill(text=text)).n_tokens

    async def prefill(
        self,
        text: str = "",
        pcm: np.ndarray | None = None,
        image: np.ndarray | None = None,
        max_slices: int | None = None,
    ) -> PrefillResult:
        """Add an image (uint8 (h, w, 3) RGB), audio (1-D float32, 16 kHz mono) and then text to the current
        user turn, in that order, as one step that no other request can interleave with. ``max_slices``
        (0..9) overrides the session's slice count for this image. Counts as one prefill if anything was
        added."""
        engine = self._require_session()
        self._refuse_while_generating("add input")
        async with self._session_lock:
            self._refuse_while_generating("add input")
            await self._settle(engine)
            added = PrefillResult()
            try:
                if image is not None:
                    slices = self.session["max_slices"] if max_slices is None else max_slices
                    added = PrefillResult(n_image_positions=await self._prefill_image(engine, image, slices))
                if pcm is not None:
                    samples = np.ascontiguousarray(pcm, dtype=np.float32)
                    n_audio = await self._call(engine.prefill_audio, samples, state_error=self._audio_error())
                    added = replace(added, n_audio_positions=n_audio)
                if text or (pcm is None and image is None):
                    added = replace(added, n_text_tokens=await self._call(engine.prefill_text, text))
            finally:
                if added.n_tokens:
                    self.prefill_count += 1
            return added

    async def _prefill_image(self, engine: Any, image: np.ndarray, max_slices: int) -> int:
        state_error = NoSessionError if self.stages().get("vision") else FeatureUnavailableError
        try:  # no dtype conversion here: the engine refuses anything but uint8 RGB, naming `rgb`
            return await self._call(engine.prefill_image, image, max_slices, state_error=state_error)
        except ValueError as exc:  # e.g. an aspect ratio too extreme for the patch grid
            message = str(exc)
            raise InvalidInputError(message if message.startswith("image") else f"image: {message}") from exc

    async def begin_turn(
        self, max_new_tokens: int | None = None, length_penalty: float | None = None
    ) -> TurnStream:
        """Start one answer (limits default to the session's); read its events from the returned stream."""
        engine = self._require_session()
        self._refuse_while_generating("start another answer")
        async with self._session_lock:
            self._refuse_while_generating("start another answer")
            await self._settle(engine)
            turn = _Turn()
            self._turn = turn  # installed before generate(): the first events may precede its return
            try:
                turn.turn_id = await self._call(engine.generate, max_new_tokens or -1, length_penalty or -1.0)
            except BaseException:
                self._turn = None
                raise
        return TurnStream(self, turn)

    async def stop(self) -> bool:
        """End the current answer (all stages). Returns True if an answer was running."""
        return await self._interrupt("stop")

    async def break_turn(self) -> bool:
        """Barge-in: cut the current answer (in duplex the session keeps listening)."""
        return await self._interrupt("break_turn")

    async def reset(self) -> None:
        """Stop any answer and drop the conversation back to the system prompt."""
        engine = self._require_session()
        running = self._turn
        async with self._session_lock:
            await self._call(engine.reset)
            self.prefill_count = 0
        if running is not None:
            await self._await_turn_end(running, "reset")

    def request_stop_nowait(self) -> None:
        """Ask the engine to stop from a context that cannot await (a cancelled generator's cleanup)."""
        engine = self._engine
        if engine is None:
            return
        future = asyncio.get_running_loop().run_in_executor(None, engine.stop)
        future.add_done_callback(_log_background_failure)

    # ----- internals ---------------------------------------------------------------------------------
    async def _interrupt(self, method: str) -> bool:
        engine = self._engine
        running = self._turn
        if engine is None:
            return False
        await asyncio.to_thread(getattr(engine, method))
        if running is not None:
            await self._await_turn_end(running, method)
        return running is not None

    async def _settle(self, engine: Any) -> None:
        """After end_of_turn the engine may still close the turn (e.g. append the end-of-turn tokens) for a
        moment; wait for that instead of answering 409 to a client that did nothing wrong."""
        if self._turn is None and engine.state == "generating":
            log.debug("engine still finishing the previous turn; waiting")
            await asyncio.to_thread(engine.wait, self._turn_end_timeout_s)

    def _audio_error(self) -> type[OmniAppError]:
        """What a StateError of prefill_audio means: no audio stage, or audio the engine refuses."""
        return InvalidInputError if self.stages().get("audio") else FeatureUnavailableError

    async def _call(
        self,
        function: Callable[..., Any],
        *args: Any,
        state_error: type[OmniAppError] = NoSessionError,
    ) -> Any:
        module = self.module()
        context_full = getattr(module, "ContextFullError", ())  # a StateError subclass
        try:
            return await asyncio.to_thread(function, *args)
        except context_full as exc:
            raise ContextFullError(str(exc)) from exc
        except module.BusyError as exc:
            raise BusyError(str(exc)) from exc
        except module.StateError as exc:
            raise state_error(str(exc)) from exc

    def _require_engine(self) -> Any:
        if self._engine is None:
            raise NotInitializedError("engine not initialized")
        return self._engine

    def _require_session(self) -> Any:
        engine = self._require_engine()
        if self.session is None:
            raise NoSessionError("no active session: call /omni/init_sys_prompt first")
        return engine

    def _refuse_while_generating(self, action: str) -> None:
        if self._turn is not None:
            raise BusyError(
                f"cannot {action} while an answer is being generated; wait for its end or call /omni/stop"
            )

    def _on_engine_event(self, event: dict[str, Any]) -> None:
        """Engine dispatcher thread: hand the event to the loop, never block."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: dict[str, Any]) -> None:
        turn = self._turn
        if turn is None:
            log.debug("engine event outside a turn dropped: %s", event.get("type"))
            return
        turn.queue.put_nowait(event)
        if event["type"] == END_OF_TURN:
            self._finish(turn)

    def _finish(self, turn: _Turn) -> None:
        if self._turn is turn:
            self._turn = None
        self.turns_completed += 1
        turn.finished.set()

    async def _await_turn_end(self, turn: _Turn, after: str) -> None:
        try:
            await asyncio.wait_for(turn.finished.wait(), self._turn_end_timeout_s)
        except asyncio.TimeoutError:
            message = (
                f"engine bug: no end_of_turn event within {self._turn_end_timeout_s:g} s after {after}(); "
                "the answer was closed by the server"
            )
            log.error("%s", message)
            turn.queue.put_nowait({"type": "error", "turn": turn.turn_id, "message": message})
            turn.queue.put_nowait({"type": END_OF_TURN, "turn": turn.turn_id, "reason": "error"})
            self._finish(turn)


def _log_background_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("engine stop after client disconnect failed: %s", future.exception())


class Assistant:
    """Blocking assistant for scripts and notebooks.

    >>> with Assistant("models/tiny", temperature=0) as bot:   # doctest: +SKIP
    ...     print(bot.chat("Hello!"))
    ...     for event in bot.stream("And again?"):
    ...         print(event)

    ``stream`` yields the engine's event dicts (``text``, ``stats``, ``error``, ... and last ``end_of_turn``).
    ``ref_audio`` (1-D float32, 16 kHz mono) is an optional reference voice for the system prompt.
    Keyword arguments other than the engine/session options below are sampling parameters
    (temperature, top_k, top_p, min_p, repetition_penalty, repetition_window, length_penalty, seed).
    ``tts_sampling`` sets the TTS sampler (temperature, top_p, top_k, repetition_penalty, penalty_window,
    min_keep, max_tokens_per_chunk, seed); with ``speak`` and the model directory's tts/ files every answer
    also yields ``tts_chunk`` events carrying its speech tokens.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        media_type: str = "audio",
        language: str = "zh",
        speak: bool = True,
        max_new_tokens: int | None = None,
        n_ctx: int = 4096,
        n_gpu_layers: int = -1,
        n_threads: int = 0,
        llm_file: str = "",
        ref_audio: np.ndarray | None = None,
        tts_sampling: dict[str, float | int] | None = None,
        **sampling: float | int,
    ) -> None:
        self._module = import_engine_module()
        config = EngineConfig(
            Path(model_dir), llm_file, n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads
        )
        self.session_config = SessionConfig(
            media_type, False, language, speak, max_new_tokens, dict(sampling), dict(tts_sampling or {})
        )
        self._engine = self._module.Engine(build_engine_options(self._module, config))
        self._events: queue.Queue[dict[str, Any]] | None = None
        self._busy = threading.Lock()
        options = build_session_options(self._module, self.session_config)
        if ref_audio is None:
            self._engine.start_session(options, self._on_event)
        else:
            self._engine.start_session(options, self._on_event, np.ascontiguousarray(ref_audio, np.float32))
        self.settings = describe_session_options(options)

    @property
    def engine(self) -> Any:
        """The underlying ``omni_engine.Engine`` (for ``n_past``, ``context_tokens()``, ``info``...)."""
        return self._engine

    def stream(
        self,
        text: str,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
        image: np.ndarray | None = None,
        max_slices: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """Add ``text`` as the user's turn and yield the answer's events; closing early stops the answer.
        ``max_new_tokens`` / ``length_penalty`` apply to this answer only (default: the session's).
        ``image`` (uint8 RGB, (height, width, 3); e.g. ``np.asarray(PIL_image.convert("RGB"))``) goes before
        the text, with up to ``max_slices`` high-detail slices (needs the model directory's vision file)."""
        if not self._busy.acquire(blocking=False):
            raise BusyError("an answer is already being generated")
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events = events
        started = ended = False
        try:
            if image is not None:
                self._engine.prefill_image(image, max_slices)
            if text:
                self._engine.prefill_text(text)
            self._engine.generate(max_new_tokens or -1, length_penalty or -1.0)
            started = True
            while not ended:
                event = events.get()
                ended = event["type"] == END_OF_TURN
                yield event
        finally:
            if started and not ended:
                self._engine.stop()
                self._drain_until_end(events)
            if started:
                # the engine may still close the turn after its end_of_turn event (state "generating")
                self._engine.wait(TURN_END_TIMEOUT_S)
            self._events = None
            self._busy.release()

    def chat(
        self,
        text: str,
        max_new_tokens: int | None = None,
        image: np.ndarray | None = None,
        max_slices: int = 0,
    ) -> str:
        """Add ``text`` (after ``image``, if given) and return the whole answer; raises OmniAppError if the
        engine reported an error."""
        pieces: list[str] = []
        errors: list[str] = []
        for event in self.stream(text, max_new_tokens, image=image, max_slices=max_slices):
            if event["type"] == "text":
                pieces.append(event["text"])
            elif event["type"] == "error":
                errors.append(event["message"])
        if errors:
            raise OmniAppError("; ".join(errors))
        return "".join(pieces)

    def stop(self) -> None:
        """End the current answer (safe from any thread)."""
        self._engine.stop()

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self._engine.reset()

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_event(self, event: dict[str, Any]) -> None:
        events = self._events
        if events is not None:
            events.put(event)

    @staticmethod
    def _drain_until_end(events: queue.Queue[dict[str, Any]]) -> None:
        while True:
            try:
                event = events.get(timeout=TURN_END_TIMEOUT_S)
            except queue.Empty:
                log.error("engine bug: no end_of_turn within %g s after stop()", TURN_END_TIMEOUT_S)
                return
            if event["type"] == END_OF_TURN:
                return

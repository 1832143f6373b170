"""FastAPI app: the reference demo's HTTP/SSE contract (app-api.md §2–3) over :class:`OmniEngine`.

Differences from the reference, all deliberate (architecture.md §4): SSE messages carry ``event:`` names and
the stream ends with ``data: [DONE]`` right after the ``done`` event; 4xx errors with JSON bodies that name
the field; one session owner at a time (409 for another client); ``stop`` and ``break`` have distinct
meanings; ``reset`` resets every stage; bodies are size-limited; the server binds 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import socket
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, FastAPI, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import omni_app
from omni_app import schemas
from omni_app.audio import AudioDecodeError, AudioTooLongError, decode_audio
from omni_app.audio import warm_up as warm_up_audio_decoder
from omni_app.engine import (
    BusyError,
    ContextFullError,
    EngineConfig,
    EngineUnavailableError,
    FeatureUnavailableError,
    InvalidInputError,
    ModelLoadError,
    NoSessionError,
    NotInitializedError,
    OmniAppError,
    OmniEngine,
    SessionConfig,
    TurnStream,
    import_engine_module,
    install_engine_logging,
)
from omni_app.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    decode_image,
)

log = logging.getLogger("omni_app.server")

SSE_SEP = "\n"
SSE_PING_S = 15
CLIENT_HEADER = "X-Omni-Client"
AUDIO_STAGE_MISSING = (
    "audio input needs the audio encoder stage, which this model directory does not provide "
    "(audio/MiniCPM-o-4_5-audio-F16.gguf is missing)"
)
IMAGE_STAGE_MISSING = (
    "image input needs the vision encoder stage, which this model directory does not provide "
    "(vision/MiniCPM-o-4_5-vision-F16.gguf is missing)"
)
ERROR_STATUS: dict[type[OmniAppError], int] = {
    NotInitializedError: 400,
    NoSessionError: 400,
    InvalidInputError: 400,
    BusyError: 409,
    ContextFullError: 413,
    FeatureUnavailableError: 501,
    EngineUnavailableError: 503,
    ModelLoadError: 503,
}


@dataclass(frozen=True, eq=False)
class ReferenceVoice:
    """A decoded reference voice (1-D float32, 16 kHz mono) and where it came from."""

    samples: np.ndarray
    source: schemas.RefVoiceSource

    def describe(self) -> schemas.RefVoice:
        return schemas.RefVoice(
            seconds=round(self.samples.size / schemas.SAMPLE_RATE_IN, 3), source=self.source
        )


class ReferenceVoiceFileError(Exception):
    """The --ref-audio file cannot be read or decoded; the message names the path."""


def load_reference_voice(path: str, max_seconds: float) -> ReferenceVoice:
    """Read ``--ref-audio PATH`` with the decoder of the API's audio fields."""
    label = f"--ref-audio {path}"
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ReferenceVoiceFileError(f"{label}: cannot read the file ({exc.strerror or exc})") from exc
    try:
        return ReferenceVoice(decode_audio(data, max_seconds, field=label), "--ref-audio")
    except AudioDecodeError as exc:
        raise ReferenceVoiceFileError(str(exc)) from exc


@dataclass(frozen=True)
class ServerSettings:
    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 9060
    duplex: bool = False
    language: str = "zh"
    n_ctx: int = 4096
    n_gpu_layers: int = -1
    n_threads: int = 0
    llm_file: str = ""
    max_body_mb: float = 32.0
    max_audio_seconds: float = 60.0
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    session_idle_timeout_s: float = 120.0
    open_browser: bool = False
    tiny_demo: bool = False
    ref_voice: ReferenceVoice | None = None  # the default voice of init requests without ref_audio

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def find_static_dir() -> Path | None:
    """``omni_app/static`` inside an installed wheel, else ``<repo>/static`` in a source checkout."""
    package_dir = Path(omni_app.__file__).resolve().parent
    for candidate in (package_dir / "static", package_dir.parents[1] / "static"):
        if (candidate / "index.html").is_file():
            return candidate
    return None


# ----- session ownership -------------------------------------------------------------------------------
class SessionOwnership:
    """Single-client rule: the client that inits owns the session until it is idle for ``idle_timeout_s``.

    Clients identify themselves with the X-Omni-Client header (or a ``client_id`` field); a request without
    one is the anonymous client, which is a client like any other.
    """

    def __init__(self, idle_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self.claimed = False
        self.owner: str | None = None
        self._last_seen = 0.0

    def check(self, client: str | None) -> None:
        if self.claimed and client != self.owner:
            raise HTTPException(409, self._conflict_message(client))
        self._last_seen = self._clock()

    def claim(self, client: str | None, generating: bool) -> None:
        idle_for = self._clock() - self._last_seen
        if self.claimed and client != self.owner and (generating or idle_for < self.idle_timeout_s):
            raise HTTPException(409, self._conflict_message(client))
        self.claimed, self.owner, self._last_seen = True, client, self._clock()

    def release(self) -> None:
        self.claimed, self.owner = False, None

    def _conflict_message(self, client: str | None) -> str:
        owner = "an anonymous client (no X-Omni-Client header)" if self.owner is None else "another client"
        you = "you sent no X-Omni-Client id" if client is None else "your X-Omni-Client id differs"
        return (
            f"the session is owned by {owner} and {you}; one client at a time — the owner's session can be "
            f"taken over with /omni/init_sys_prompt after it has been idle for {self.idle_timeout_s:g} s"
        )


@dataclass
class AppState:
    settings: ServerSettings
    engine: OmniEngine
    ownership: SessionOwnership
    ref_voice: ReferenceVoice | None = None  # the voice of the current session (valid while one exists)

    def ref_voice_status(self) -> schemas.RefVoice | None:
        if self.engine.session is None or self.ref_voice is None:
            return None
        return self.ref_voice.describe()


def get_state(request: Request) -> AppState:
    return request.app.state.omni


def client_identity(header_value: str | None, body: schemas.ClientRequest | None) -> str | None:
    if header_value:
        return header_value
    return body.client_id if body is not None else None


# ----- SSE ---------------------------------------------------------------------------------------------
def _text_event(event: dict[str, Any]) -> schemas.TextEvent:
    return schemas.TextEvent(chunk_data=schemas.ChunkData(text=event["text"]))


def _audio_event(event: dict[str, Any]) -> schemas.AudioEvent:
    pcm = event["pcm"]
    raw = pcm if isinstance(pcm, bytes) else np.asarray(pcm, dtype="<i2").tobytes()
    chunk = schemas.ChunkData(
        wav=base64.b64encode(raw).decode("ascii"),
        sample_rate=event.get("sample_rate", schemas.SAMPLE_RATE_OUT),
        n_input_tokens=event.get("n_input_tokens"),
    )
    return schemas.AudioEvent(chunk_data=chunk)


def _tts_chunk_event(event: dict[str, Any]) -> schemas.TtsChunkEvent:
    n_speech = event["n_speech_tokens"]
    chunk = schemas.TtsChunk(
        text=event["text"],
        n_speech_tokens=n_speech,
        chunk_idx=event["chunk_idx"],
        audio_duration_ms=n_speech * schemas.MS_PER_SPEECH_TOKEN,
        speech_tokens=event["speech_tokens"],
    )
    return schemas.TtsChunkEvent(tts_chunk=chunk)


def _stats_event(event: dict[str, Any]) -> schemas.StatsEvent:
    return schemas.StatsEvent(stats=schemas.TurnStats(**{k: v for k, v in event.items() if k != "type"}))


def _error_event(event: dict[str, Any]) -> schemas.ErrorEvent:
    return schemas.ErrorEvent(error=event["message"])


def _done_event(event: dict[str, Any]) -> schemas.DoneEvent:
    return schemas.DoneEvent(reason=event["reason"], turn=event.get("turn"))


def _listen_event(event: dict[str, Any]) -> schemas.ListenEvent:
    return schemas.ListenEvent()


# engine event type -> (SSE event name, payload builder); a new engine event is one line here.
SSE_MAPPING: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "text": ("text", _text_event),
    "audio": ("audio", _audio_event),
    "tts_chunk": ("tts_chunk", _tts_chunk_event),
    "listen": ("listen", _listen_event),
    "stats": ("stats", _stats_event),
    "error": ("error", _error_event),
    "end_of_turn": ("done", _done_event),
}


def engine_event_to_sse(event: dict[str, Any]) -> ServerSentEvent | None:
    """One engine event as one SSE message (``event: <name>``, ``data: <reference JSON>``); None: unknown."""
    mapping = SSE_MAPPING.get(event.get("type", ""))
    if mapping is None:
        log.warning("engine event of unknown type not forwarded: %r", event.get("type"))
        return None
    name, build = mapping
    return ServerSentEvent(data=build(event).model_dump_json(exclude_none=True), event=name, sep=SSE_SEP)


def sse_done_marker() -> ServerSentEvent:
    return ServerSentEvent(data="[DONE]", sep=SSE_SEP)


async def sse_stream(turn: TurnStream) -> AsyncIterator[ServerSentEvent]:
    async for event in turn.events():
        message = engine_event_to_sse(event)
        if message is not None:
            yield message
    yield sse_done_marker()


# ----- middleware and error handlers ---------------------------------------------------------------------
class BodyLimitMiddleware:
    """Reads each request body up front: over ``max_bytes`` -> 413 JSON (the rest of the body is drained so
    the client sees the answer rather than a reset connection). Bodies of /omni/ routes are taken as JSON.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_mb_label: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_limit = 4 * max_bytes + (1 << 20)
        self.max_mb_label = max_mb_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, total, complete = await self._read_body(receive)
        if total > self.max_bytes:
            message = (
                f"request body too large: {total} bytes read, the limit is {self.max_mb_label} MB "
                "(--max-body-mb)"
            )
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
            return
        if not complete:
            return  # client went away while sending
        await self.app(_as_json_body(scope, body), _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, int, bool]:
        chunks: list[bytes] = []
        total = 0
        while total <= self.drain_limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", total, False
            chunk = message.get("body", b"")
            total += len(chunk)
            if total <= self.max_bytes:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), total, True
        return b"", total, False


def _as_json_body(scope: Scope, body: bytes) -> Scope:
    """Every API body is JSON whatever Content-Type the client sent (the reference parsed it as JSON too;
    `curl -d` sends form encoding)."""
    if not body or not scope.get("path", "").startswith("/omni/"):
        return scope
    headers = [(name, value) for name, value in scope.get("headers", []) if name != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect (SSE uses this)

    return replay


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "header", "path")]
    return ".".join(parts) or str(location[0] if location else "body")


def _clean_validation_error(error: dict[str, Any]) -> dict[str, Any]:
    """Drop the echoed input (may be megabytes of base64) and make exception objects in ctx readable."""
    cleaned = {k: v for k, v in error.items() if k not in ("input", "url")}
    if "ctx" in cleaned:
        cleaned["ctx"] = {k: str(v) if isinstance(v, Exception) else v for k, v in cleaned["ctx"].items()}
    return cleaned


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_clean_validation_error(error) for error in exc.errors()]
    detail = jsonable_encoder(errors)
    invalid_json = [error for error in errors if error.get("type") == "json_invalid"]
    if invalid_json:
        error = invalid_json[0]
        reason = error.get("ctx", {}).get("error", "JSON decode error")
        message = f"request body is not valid JSON: {reason} at position {error['loc'][-1]}"
        return JSONResponse({"error": message, "detail": detail}, status_code=400)
    message = "; ".join(f"{_field_name(error['loc'])}: {error['msg']}" for error in errors)
    return JSONResponse({"error": f"invalid request: {message}", "detail": detail}, status_code=422)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _on_app_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)), 500)
    if status >= 500 and status != 501:
        log.error("%s: %s", type(exc).__name__, exc)
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


# ----- routes ------------------------------------------------------------------------------------------
router = APIRouter()
ClientHeader = Annotated[
    str | None, Header(alias=CLIENT_HEADER, description="Client id (single-client rule).")
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse} for code in (400, 409, 413, 415, 422, 501, 503)
}


@router.get("/health", response_model=schemas.HealthResponse, tags=["status"])
async def health(request: Request) -> schemas.HealthResponse:
    """Liveness, load progress and the session's state (``session.n_past`` grows with the conversation)."""
    state = get_state(request)
    engine = state.engine
    engine_version, engine_error = _engine_module_version()
    session = engine.session or {}
    ownership = state.ownership
    return schemas.HealthResponse(
        version=omni_app.__version__,
        engine_version=engine_version,
        engine_available=engine_error is None,
        engine_error=engine_error,
        initialized=engine.initialized,
        loading=engine.loading,
        load_error=engine.load_error,
        duplex_mode=session.get("duplex", state.settings.duplex),
        model_dir=str(state.settings.model_dir),
        tiny_demo=state.settings.tiny_demo,
        stages=engine.stages(),
        session=schemas.SessionStatus(
            **engine.status(),
            media_type=session.get("media_type"),
            language=session.get("language"),
            ref_voice=state.ref_voice_status(),
            owned_by_named_client=(ownership.owner is not None) if ownership.claimed else None,
        ),
    )


def _engine_module_version() -> tuple[str | None, str | None]:
    try:
        return import_engine_module().__version__, None
    except EngineUnavailableError as exc:
        return None, str(exc)


@router.post("/omni/init_sys_prompt", response_model=schemas.InitResponse, responses=ERRORS, tags=["session"])
async def init_sys_prompt(
    request: Request,
    x_omni_client: ClientHeader = None,
    body: Annotated[schemas.InitRequest | None, Body()] = None,
) -> schemas.InitResponse:
    """Load the models (once; concurrent calls wait for the same load) and start a new conversation with
    the given settings. The response echoes the settings the engine actually uses. ``ref_audio`` (or the
    server's ``--ref-audio``) puts a reference voice into the system prompt; a voice that cannot be decoded
    changes nothing, one the engine refuses (400/413) leaves no session until the next successful init."""
    state = get_state(request)
    body = body or schemas.InitRequest()
    voice = await _requested_voice(body.ref_audio, state.settings)
    client = client_identity(x_omni_client, body)
    state.ownership.claim(client, generating=state.engine.generating)
    try:
        loaded_now = await state.engine.load()
        samples = None if voice is None else voice.samples
        actual = await state.engine.start_session(_session_config(body, state.settings), samples)
    except BaseException:
        state.ownership.release()
        raise
    state.ref_voice = voice
    if loaded_now and state.engine.stages().get("audio"):
        # librosa's first resample takes seconds (imports); pay that now rather than in the first voice turn
        threading.Thread(target=warm_up_audio_decoder, name="audio-decoder-warm-up", daemon=True).start()
    status = state.engine.status()
    sampling = actual["sampling"]
    return schemas.InitResponse(
        media_type=schemas.MEDIA_TYPE_CODES[actual["media_type"]],
        media_type_name=actual["media_type"],
        duplex_mode=actual["duplex"],
        language=actual["language"],
        length_penalty=sampling["length_penalty"],
        speak=actual["speak"],
        max_new_tokens=actual["max_new_tokens"],
        sampling=schemas.SamplingSettings(**sampling),
        tts_sampling=schemas.TtsSamplingSettings(**actual["tts_sampling"]),
        models_loaded_now=loaded_now,
        n_past=status["n_past"],
        n_keep=status["n_keep"],
        ref_voice=state.ref_voice_status(),
        high_quality_mode=actual["high_quality_mode"],
        max_slice_nums=actual["max_slices"],
        stages=state.engine.stages(),
        tiny_demo=state.settings.tiny_demo,
    )


async def _requested_voice(ref_audio: str | None, settings: ServerSettings) -> ReferenceVoice | None:
    """The init's voice: absent/null -> the --ref-audio default (if any); "" -> none; else the clip."""
    if ref_audio is None:
        return settings.ref_voice
    data = _decode_base64_field("ref_audio", ref_audio)
    if data is None:
        return None
    samples = await _decode_audio_field(data, settings.max_audio_seconds, field="ref_audio")
    return ReferenceVoice(samples, "request")


def _session_config(body: schemas.InitRequest, settings: ServerSettings) -> SessionConfig:
    return SessionConfig(
        media_type=body.media_type or "audio",
        duplex=settings.duplex if body.duplex_mode is None else body.duplex_mode,
        language=body.language or settings.language,
        speak=True if body.speak is None else body.speak,
        max_new_tokens=body.max_new_tokens,
        sampling=body.sampling_overrides(),
        tts_sampling=body.tts_sampling_overrides(),
        high_quality_mode=bool(body.high_quality_mode),
    )


@router.post(
    "/omni/streaming_prefill", response_model=schemas.PrefillResponse, responses=ERRORS, tags=["conversation"]
)
async def streaming_prefill(
    request: Request,
    x_omni_client: ClientHeader = None,
    body: Annotated[schemas.PrefillRequest | None, Body()] = None,
) -> schemas.PrefillResponse:
    """Add user input to the current user turn, in this order: ``image``, ``audio``, ``text``. The image is
    base64 of a PNG, JPEG or WebP file (needs the vision stage; ``max_slice_nums`` overrides the session's
    slice count). Audio is base64 of a sound file (WAV, FLAC, OGG, ...: any rate and channel count) or of raw
    float32 16 kHz mono samples. Nothing is added when any part is refused before the engine."""
    state = get_state(request)
    body = body or schemas.PrefillRequest()
    audio = _decode_base64_field("audio", body.audio)
    image = _decode_image_base64(body.image)
    engine = _require_initialized(state)
    state.ownership.check(client_identity(x_omni_client, body))
    if audio is None and image is None and not body.text:
        raise HTTPException(400, "empty prefill: give at least one of audio, image or text")
    if image is not None and not engine.stages().get("vision"):
        raise FeatureUnavailableError(IMAGE_STAGE_MISSING)
    if audio is not None and not engine.stages().get("audio"):
        raise FeatureUnavailableError(AUDIO_STAGE_MISSING)
    rgb = None if image is None else await _decode_image_field(image, state.settings)
    pcm = None if audio is None else await _decode_audio_field(audio, state.settings.max_audio_seconds)
    result = await engine.prefill(body.text or "", pcm, rgb, body.max_slice_nums)
    return schemas.PrefillResponse(
        index=engine.prefill_count,
        n_tokens=result.n_tokens,
        n_image_positions=result.n_image_positions,
        image_size=None if rgb is None else [rgb.shape[1], rgb.shape[0]],
        n_audio_positions=result.n_audio_positions,
        n_text_tokens=result.n_text_tokens,
        audio_seconds=None if pcm is None else round(pcm.size / schemas.SAMPLE_RATE_IN, 3),
    )


async def _decode_image_field(data: bytes, settings: ServerSettings) -> np.ndarray:
    """Decode off the event loop; 413 over a limit, 415 for another format, else 400 with the message."""
    try:
        return await asyncio.to_thread(
            decode_image, data, settings.max_image_bytes, settings.max_image_pixels
        )
    except ImageTooLargeError as exc:
        raise HTTPException(413, str(exc)) from exc
    except UnsupportedImageFormatError as exc:
        raise HTTPException(415, str(exc)) from exc
    except ImageDecodeError as exc:
        raise HTTPException(400, str(exc)) from exc


def _decode_image_base64(value: str | None) -> bytes | None:
    """Unlike the audio field, an empty ``image`` is a mistake rather than "no image"."""
    if value == "":
        raise HTTPException(400, "image is empty")
    return _decode_base64_field("image", value)


async def _decode_audio_field(data: bytes, max_seconds: float, field: str = "audio") -> np.ndarray:
    """Decode off the event loop; a bad clip is 400 (413 if too long) with the decoder's message."""
    try:
        return await asyncio.to_thread(decode_audio, data, max_seconds, field)
    except AudioTooLongError as exc:
        raise HTTPException(413, str(exc)) from exc
    except AudioDecodeError as exc:
        raise HTTPException(400, str(exc)) from exc


def _decode_base64_field(name: str, value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(400, f"{name}: not valid base64 ({exc})") from exc


def _require_initialized(state: AppState) -> OmniEngine:
    if not state.engine.initialized:
        raise NotInitializedError("engine not initialized")
    return state.engine


SSE_DOC = (
    "Server-Sent Events. Each message: `event: <name>` and `data: <json>`; names text, tts_chunk, audio, "
    "listen, stats, error, done (schemas: *Event in the components). After `done` the line `data: [DONE]` "
    "ends the stream."
)


@router.post(
    "/omni/streaming_generate",
    responses={200: {"description": SSE_DOC, "content": {"text/event-stream": {}}}, **ERRORS},
    tags=["conversation"],
)
async def streaming_generate(
    request: Request,
    x_omni_client: ClientHeader = None,
    body: Annotated[schemas.GenerateRequest | None, Body()] = None,
) -> EventSourceResponse:
    """Generate one answer and stream it. Closing the connection stops the answer."""
    state = get_state(request)
    body = body or schemas.GenerateRequest()
    engine = _require_initialized(state)
    state.ownership.check(client_identity(x_omni_client, body))
    turn = await engine.begin_turn(body.max_new_tokens, body.length_penalty)
    return EventSourceResponse(
        sse_stream(turn),
        ping=SSE_PING_S,
        sep=SSE_SEP,
        headers={"Cache-Control": "no-cache"},
        background=BackgroundTask(turn.cancel),
    )


@router.post("/omni/stop", response_model=schemas.ControlResponse, responses=ERRORS, tags=["conversation"])
async def stop(
    request: Request,
    x_omni_client: ClientHeader = None,
    body: Annotated[schemas.ControlRequest | None, Body()] = None,
) -> schemas.ControlResponse:
    """Stop: end the current answer in every stage (in duplex: end the duplex session's current activity).
    Returns once the engine confirmed the end; safe (a no-op) when idle or before init."""
    return await _interrupt(get_state(request), client_identity(x_omni_client, body), OmniEngine.stop)


@router.post("/omni/break", response_model=schemas.ControlResponse, responses=ERRORS, tags=["conversation"])
async def break_turn(
    request: Request,
    x_omni_client: ClientHeader = None,
    body: Annotated[schemas.ControlRequest | None, Body()] = None,
) -> schemas.ControlResponse:
    """Break (barge-in): cut the current answer because the user speaks; in duplex the session keeps
    listening. In simplex the effect equals stop. Safe (a no-op) when idle or before init."""
    return await _interrupt(get_state(request), client_identity(x_omni_client, body), OmniEngine.break_turn)


async def _interrupt(
    state: AppState, client: str | None, action: Callable[[OmniEngine], Awaitable[bool]]
) -> schemas.ControlResponse:
    engine = state.engine
    if not engine.initialized:
        return schemas.ControlResponse(state="not_initialized", was_generating=False)
    state.ownership.check(client)
    was_generating = await action(engine)
    done_state = "generation_stopped" if action is OmniEngine.stop else "break"
    return schemas.ControlResponse(
        state=done_state if was_generating else "idle", was_generating=was_generating
    )


@router.post("/omni/reset", response_model=schemas.ResetResponse, responses=ERRORS, tags=["session"])
async def reset(
    request: Request,
    x_omni_client: ClientHeader = None,
    body: Annotated[schemas.ControlRequest | None, Body()] = None,
) -> schemas.ResetResponse:
    """New conversation: stop any answer, reset every stage, keep the system prompt (no reload)."""
    state = get_state(request)
    engine = _require_initialized(state)
    state.ownership.check(client_identity(x_omni_client, body))
    await engine.reset()
    status = engine.status()
    return schemas.ResetResponse(n_past=status["n_past"], n_keep=status["n_keep"])


# ----- app factory -------------------------------------------------------------------------------------
def create_app(settings: ServerSettings, engine: OmniEngine | None = None) -> FastAPI:
    engine = engine or OmniEngine(
        EngineConfig(
            model_dir=settings.model_dir,
            llm_file=settings.llm_file,
            n_ctx=settings.n_ctx,
            n_gpu_layers=settings.n_gpu_layers,
            n_threads=settings.n_threads,
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.stop()
        await engine.close()

    app = FastAPI(
        title="omni-app",
        version=omni_app.__version__,
        description="Local MiniCPM-o assistant: reference-compatible HTTP + SSE API over the omni_engine.",
        lifespan=lifespan,
    )
    app.state.omni = AppState(settings, engine, SessionOwnership(settings.session_idle_timeout_s))
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, max_mb_label=f"{settings.max_body_mb:g}"
    )
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(OmniAppError, _on_app_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
    app.include_router(router)
    _mount_static(app)
    app.openapi = lambda: _openapi_with_events(app)  # type: ignore[method-assign]
    return app


def _mount_static(app: FastAPI) -> None:
    static_dir = find_static_dir()
    if static_dir is None:
        log.warning("static/index.html not found: the web page is not served (API only)")
        return
    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    app.mount("/", StaticFiles(directory=static_dir, html=True), name="page")


def _openapi_with_events(app: FastAPI) -> dict[str, Any]:
    """Standard schema plus the SSE event payload models, referenced from the generate endpoint."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    refs = []
    for model in schemas.SSE_EVENT_MODELS.values():
        model_schema = model.model_json_schema(ref_template=template)
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
        refs.append({"$ref": template.format(model=model.__name__)})
    generate = schema["paths"]["/omni/streaming_generate"]["post"]["responses"]["200"]
    generate["content"] = {"text/event-stream": {"schema": {"oneOf": refs}}}
    app.openapi_schema = schema
    return schema


# ----- entry point -------------------------------------------------------------------------------------
def settings_from_args(
    args: argparse.Namespace, model_dir: Path, tiny_demo: bool, ref_voice: ReferenceVoice | None = None
) -> ServerSettings:
    return ServerSettings(
        model_dir=model_dir,
        host=args.host,
        port=args.port,
        duplex=args.duplex,
        language=args.language,
        n_ctx=args.n_ctx,
        n_gpu_layers=args.n_gpu_layers,
        n_threads=args.threads,
        llm_file=args.llm_file,
        max_body_mb=args.max_body_mb,
        max_audio_seconds=args.max_audio_seconds,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        session_idle_timeout_s=args.session_idle_timeout,
        open_browser=args.open_browser,
        tiny_demo=tiny_demo,
        ref_voice=ref_voice,
    )


def serve(args: argparse.Namespace) -> int:
    """``python -m omni_app serve``: read --ref-audio, resolve the model directory, then run uvicorn.
    Exit status 2 if there is no model directory or the --ref-audio file cannot be used."""
    from omni_app import config

    ref_voice = None
    if args.ref_audio:
        try:
            ref_voice = load_reference_voice(args.ref_audio, args.max_audio_seconds)
        except ReferenceVoiceFileError as exc:
            log.error("%s", exc)
            return 2
        log.info(
            "reference voice: %s (%.2f s)", args.ref_audio, ref_voice.samples.size / schemas.SAMPLE_RATE_IN
        )
    model_dir = config.resolve_model_dir(args.model_dir)
    if model_dir is None:
        where = args.model_dir or "--model-dir / OMNI_MODEL_DIR / ./models"
        log.error(
            "no model directory found (%s). Download MiniCPM-o 4.5 GGUF into models/ or create a tiny demo "
            "directory with `python -m omni_app make-tiny-models DIR`.",
            where,
        )
        return 2
    report = config.validate_model_dir(Path(model_dir))
    if not report.ok:
        log.error(
            "model directory %s is not usable (init will fail): %s", model_dir, "; ".join(report.problems)
        )
    else:
        log.info("model files for stages: %s", ", ".join(s for s, ok in report.stages.items() if ok))
    if ref_voice is not None and not report.stages["audio"]:
        log.error(
            "--ref-audio needs the audio encoder stage, but the model directory %s has no usable audio file "
            "(audio/MiniCPM-o-4_5-audio-F16.gguf)",
            model_dir,
        )
        return 2
    settings = settings_from_args(args, Path(model_dir), tiny_demo=report.tiny_demo, ref_voice=ref_voice)
    return run_server(settings)


def run_server(settings: ServerSettings) -> int:
    import uvicorn

    if not install_engine_logging(logging.getLogger().getEffectiveLevel()):
        log.error("omni_engine is not importable: the server starts, but init will answer 503")
    if settings.tiny_demo:
        _warn_tiny_demo(settings.model_dir)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "binding %s: the assistant is reachable from the network without authentication", settings.host
        )
    url = f"http://{_connect_host(settings.host)}:{settings.port}"
    log.info("omni-app %s on %s (model dir %s)", omni_app.__version__, url, settings.model_dir)
    if settings.open_browser:
        threading.Thread(target=_open_browser_when_ready, args=(settings, url), daemon=True).start()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=3,
    )
    return 0


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _warn_tiny_demo(model_dir: Path) -> None:
    banner = "!" * 78
    log.warning(banner)
    log.warning("TINY DEMO MODELS in %s: random weights, the answers are gibberish.", model_dir)
    log.warning("For real answers download MiniCPM-o 4.5 GGUF into models/ (see models/README.md).")
    log.warning(banner)


def _open_browser_when_ready(settings: ServerSettings, url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    host = _connect_host(settings.host)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, settings.port), timeout=0.5):
                webbrowser.open(url)
                return
        except OSError:
            time.sleep(0.2)
    log.warning("server not reachable after %g s; open %s yourself", timeout_s, url)

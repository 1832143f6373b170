"""Pydantic models of the HTTP API: requests, responses and SSE event payloads.

Field names follow the reference demo (app-api.md §2–3) so existing clients keep working; unknown request
fields are ignored (the reference UI sends ``idx``), wrong types and values are 422 errors naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MediaTypeName = Literal["audio", "omni"]
MEDIA_TYPE_CODES: dict[str, int] = {"audio": 1, "omni": 2}
_MEDIA_TYPE_ALIASES: dict[str, str] = {"audio": "audio", "omni": "omni", "video": "omni"}
SAMPLE_RATE_IN = 16000
SAMPLE_RATE_OUT = 24000
MS_PER_SPEECH_TOKEN = 40
MAX_IMAGE_SLICES = 9
MAX_TTS_TOKENS_PER_CHUNK = 500
TTS_FIELD_PREFIX = "tts_"
DoneReason = Literal["eos", "max_tokens", "stop", "break", "context_full", "error"]


def parse_media_type(value: object) -> str:
    """1 / "audio" -> "audio"; 2 / "omni" / "video" -> "omni"; anything else is an error."""
    if isinstance(value, bool):
        raise ValueError(
            "must be 1 or 'audio' (voice), or 2, 'omni' or 'video' (voice + vision), not a boolean"
        )
    if isinstance(value, int):
        for name, code in MEDIA_TYPE_CODES.items():
            if value == code:
                return name
    if isinstance(value, str) and value.strip().lower() in _MEDIA_TYPE_ALIASES:
        return _MEDIA_TYPE_ALIASES[value.strip().lower()]
    raise ValueError(f"must be 1 or 'audio' (voice), or 2, 'omni' or 'video' (voice + vision); got {value!r}")


# ----- requests ----------------------------------------------------------------------------------------
class ClientRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    client_id: str | None = Field(
        None,
        max_length=128,
        description="Identifies the client that owns the session (the X-Omni-Client header wins).",
    )


class InitRequest(ClientRequest):
    media_type: MediaTypeName | None = Field(
        None, description="1/'audio' = voice, 2/'omni'/'video' = voice + vision. Falls back to msg_type."
    )
    duplex_mode: bool | None = Field(None, description="Default: the server's --duplex/--simplex choice.")
    language: Literal["zh", "en"] | None = Field(
        None, description="Prompt language. Default: server --language."
    )
    length_penalty: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description=">1 makes answers longer (scales the end-of-answer logit).",
    )
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False, description="0 = greedy.")
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0, description="0 = off.")
    min_p: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_new_tokens: int | None = Field(None, ge=1, description="Default length limit of every answer.")
    seed: int | None = Field(None, ge=-1, description="-1 = random; otherwise reproducible sampling.")
    ref_audio: str | None = Field(
        None,
        description=(
            "Reference voice for the system prompt: base64 of a sound file or of raw float32 16 kHz mono "
            "samples, decoded like streaming_prefill's `audio` (at most --max-audio-seconds). Absent or "
            'null: the server\'s --ref-audio voice if it has one; "" (empty): no voice. Without a voice the '
            "text-only system prompt is used. Needs the audio stage."
        ),
    )
    speak: bool | None = Field(
        None,
        description=(
            "True (default): speak-mode assistant prompt, and with the TTS stage every answer is also turned "
            "into speech tokens (tts_chunk events); False: plain text assistant prompt, no speech."
        ),
    )
    tts_temperature: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="TTS sampling temperature (default 0.8); 0 = greedy."
    )
    tts_top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description="TTS top-p (0.85).")
    tts_top_k: int | None = Field(None, ge=0, description="TTS top-k (25); 0 = off.")
    tts_repetition_penalty: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="TTS repetition penalty (1.05) over the last tts_penalty_window speech tokens.",
    )
    tts_penalty_window: int | None = Field(
        None, ge=0, description="Speech tokens the TTS repetition penalty looks back over (16)."
    )
    tts_min_keep: int | None = Field(None, ge=1, description="Fewest speech tokens top-p/top-k may keep (3).")
    tts_max_tokens_per_chunk: int | None = Field(
        None,
        ge=1,
        le=MAX_TTS_TOKENS_PER_CHUNK,
        description="Most speech tokens per text chunk (500 = 20 s of audio) if the speech end never comes.",
    )
    tts_seed: int | None = Field(
        None, ge=-1, description="TTS sampling seed (-1 = random; otherwise reproducible speech tokens)."
    )
    high_quality_mode: bool | None = Field(
        None,
        description=(
            "High detail: every image of the session is encoded as an overview plus up to 2 slices (up to "
            "3 x 64 positions) instead of the overview alone (64). Default false. A prefill's "
            "max_slice_nums overrides it for one image."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _msg_type_fallback(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("media_type") is None and "msg_type" in data:
            return {**data, "media_type": data["msg_type"]}
        return data

    @field_validator("media_type", mode="before")
    @classmethod
    def _media_type(cls, value: object) -> object:
        return None if value is None else parse_media_type(value)

    def sampling_overrides(self) -> dict[str, float | int]:
        names = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "length_penalty", "seed")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def tts_sampling_overrides(self) -> dict[str, float | int]:
        """The tts_* fields that were given, keyed by their TtsSamplingParams names (prefix dropped)."""
        overrides = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.startswith(TTS_FIELD_PREFIX) and value is not None:
                overrides[name.removeprefix(TTS_FIELD_PREFIX)] = value
        return overrides


class PrefillRequest(ClientRequest):
    audio: str | None = Field(
        None,
        description=(
            "Base64 of a sound file soundfile reads (WAV, FLAC, OGG, ...; any rate and channel count: "
            "downmixed and resampled to 16 kHz) or of raw little-endian float32 16 kHz mono samples. "
            "Needs the audio stage; at most --max-audio-seconds long. Added before `text`."
        ),
    )
    image: str | None = Field(
        None,
        description=(
            "Base64 of a PNG, JPEG or WebP file (other formats: 415), at most --max-image-bytes and "
            "--max-image-pixels (413); the EXIF orientation is applied. Needs the vision stage. Added first, "
            "before `audio` and `text`."
        ),
    )
    max_slice_nums: int | None = Field(
        None,
        ge=0,
        le=MAX_IMAGE_SLICES,
        description=(
            "Most slices for this request's image (0 = overview only); default: the session's (0, or 2 "
            "with high_quality_mode)."
        ),
    )
    text: str | None = Field(None, description="Typed user text, appended to the current user turn.")
    idx: Any = Field(None, description="Ignored (sent by reference clients).")


class GenerateRequest(ClientRequest):
    length_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_new_tokens: int | None = Field(None, ge=1, description="Limit for this answer only.")


class ControlRequest(ClientRequest):
    """Optional body of /omni/stop, /omni/break and /omni/reset."""


# ----- responses ---------------------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None


class SamplingSettings(BaseModel):
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    repetition_window: int
    length_penalty: float
    seed: int


class TtsSamplingSettings(BaseModel):
    """The TTS sampler's settings in use (the init's tts_* fields without the prefix)."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    penalty_window: int
    min_keep: int
    max_tokens_per_chunk: int
    seed: int


RefVoiceSource = Literal["request", "--ref-audio"]


class RefVoice(BaseModel):
    """The reference voice in the current system prompt."""

    seconds: float = Field(description="Length of the decoded voice (16 kHz), rounded to milliseconds.")
    source: RefVoiceSource = Field(
        description="request: the init's ref_audio field; --ref-audio: the server's default voice."
    )


class SessionStatus(BaseModel):
    state: str = Field(description="not_initialized | no_session | idle | generating")
    n_past: int | None = Field(None, description="Tokens/rows in the LLM KV cache.")
    n_keep: int | None = Field(None, description="Protected system-prompt length.")
    turns: int | None = Field(None, description="Answers finished since the server started.")
    prefills: int | None = Field(None, description="Prefill calls in this conversation.")
    media_type: MediaTypeName | None = None
    language: str | None = None
    ref_voice: RefVoice | None = Field(
        None, description="The reference voice in the system prompt; null: the text-only system prompt."
    )
    owned_by_named_client: bool | None = Field(
        None, description="True if the owner sent an X-Omni-Client id, False if anonymous, null if no owner."
    )


class HealthResponse(BaseModel):
    status: Literal["healthy"] = "healthy"
    backend: str = "omni_engine"
    version: str
    engine_version: str | None
    engine_available: bool
    engine_error: str | None = None
    initialized: bool
    loading: bool
    load_error: str | None = None
    duplex_mode: bool
    model_dir: str
    tiny_demo: bool
    stages: dict[str, bool]
    session: SessionStatus


class InitResponse(BaseModel):
    success: Literal[True] = True
    media_type: int = Field(description="1 = audio, 2 = omni (the engine's actual setting).")
    media_type_name: MediaTypeName
    duplex_mode: bool
    language: str
    length_penalty: float
    speak: bool
    max_new_tokens: int
    sampling: SamplingSettings
    tts_sampling: TtsSamplingSettings = Field(
        description="TTS sampling in use (applies when speak is true and the TTS stage is present)."
    )
    backend: str = "omni_engine"
    models_loaded_now: bool = Field(description="True if this call loaded the models.")
    n_past: int
    n_keep: int
    ref_voice: RefVoice | None = Field(
        description="The reference voice in the system prompt; null: the text-only system prompt."
    )
    high_quality_mode: bool = Field(description="True: images default to 2 slices (high detail).")
    max_slice_nums: int = Field(description="The session's default slice count of an image (0 or 2).")
    stages: dict[str, bool]
    tiny_demo: bool


class PrefillResponse(BaseModel):
    success: Literal[True] = True
    index: int = Field(description="1-based number of this prefill in the conversation (0 = system prompt).")
    n_tokens: int = Field(
        description="Tokens/rows added to the context (image positions + audio positions + text tokens)."
    )
    n_image_positions: int = Field(
        0,
        description=(
            "Positions of the image: <image> + 64 rows + </image>, per slice <slice> + 64 rows + </slice>, "
            "and a newline between rows of slices."
        ),
    )
    image_size: list[int] | None = Field(
        None, description="[width, height] of the decoded image (after the EXIF rotation), if any."
    )
    n_audio_positions: int = Field(
        0, description="Positions of the audio: <|audio_start|>, 10 rows per second, <|audio_end|>."
    )
    n_text_tokens: int = Field(0, description="Tokens of the text.")
    audio_seconds: float | None = Field(None, description="Length of the decoded audio (16 kHz), if any.")


class ControlResponse(BaseModel):
    success: Literal[True] = True
    state: str = Field(description="generation_stopped | break | idle | not_initialized")
    was_generating: bool


class ResetResponse(BaseModel):
    success: Literal[True] = True
    state: Literal["reset"] = "reset"
    n_past: int
    n_keep: int


# ----- SSE event payloads (the `data:` JSON of each `event:` name) -------------------------------------
class ChunkData(BaseModel):
    text: str = ""
    wav: str = Field("", description="Base64 PCM int16 little-endian mono; empty for text chunks.")
    sample_rate: int = SAMPLE_RATE_OUT
    n_input_tokens: int | None = Field(None, description="Audio chunks only: speech tokens in the window.")


class TextEvent(BaseModel):
    """event: text"""

    chunk_data: ChunkData


class AudioEvent(BaseModel):
    """event: audio"""

    chunk_data: ChunkData


class TurnStats(BaseModel):
    model_config = ConfigDict(extra="allow")

    turn: int
    prefill_tokens: int
    prefill_ms: float
    ttft_ms: float
    decode_tokens: int
    decode_ms: float
    tokens_per_s: float
    total_ms: float
    speech_tokens: int = Field(
        0, description="Speech tokens the TTS made for this answer (40 ms of audio each)."
    )
    tts_ms: float = Field(0.0, description="Time the TTS stage spent on this answer.")
    first_speech_group_ms: float = Field(
        -1.0,
        description=(
            "From the generate call to the first full group of 25 speech tokens (1 s of audio, what "
            "Token2Wav needs for its first window); -1: the answer had no full group."
        ),
    )
    # Token2Wav figures (issue 5); None only for an engine that does not report them.
    audio_samples: int | None = Field(
        None,
        description=(
            "PCM samples (24 kHz) of the answer's audio events: 960 * (3 + speech_tokens) for a whole answer "
            "(3 silence tokens lead every stream); 0 without the Token2Wav stage."
        ),
    )
    token2wav_ms: float | None = Field(None, description="Time the Token2Wav stage spent on this answer.")
    first_audio_ms: float | None = Field(
        None, description="From the generate call to the first audio event; -1: the answer had no audio."
    )


class StatsEvent(BaseModel):
    """event: stats"""

    stats: TurnStats


class TtsChunk(BaseModel):
    text: str = Field(
        description="The text chunk that was spoken (the turn's chunks concatenated = its text)."
    )
    n_speech_tokens: int
    chunk_idx: int = Field(description="Number of the text chunk within the turn, from 0.")
    audio_duration_ms: int = Field(description="n_speech_tokens * 40 (each speech token is 40 ms of audio).")
    speech_tokens: list[int] = Field(
        description=(
            "Extension of the reference: the chunk's speech codes (0..6560), in order, for clients that run "
            "their own vocoder."
        )
    )


class TtsChunkEvent(BaseModel):
    """event: tts_chunk"""

    tts_chunk: TtsChunk


class ListenEvent(BaseModel):
    """event: listen"""

    is_listen: Literal[True] = True


class ErrorEvent(BaseModel):
    """event: error"""

    error: str


class DoneEvent(BaseModel):
    """event: done — always the last named event; followed by the line `data: [DONE]`."""

    done: Literal[True] = True
    reason: DoneReason
    turn: int | None


SSE_EVENT_MODELS: dict[str, type[BaseModel]] = {
    "text": TextEvent,
    "audio": AudioEvent,
    "tts_chunk": TtsChunkEvent,
    "listen": ListenEvent,
    "stats": StatsEvent,
    "error": ErrorEvent,
    "done": DoneEvent,
}

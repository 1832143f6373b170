"""Reference voice in the system prompt (pipeline.md §3.1): the init's ``ref_audio`` field and ``serve
--ref-audio``, with the real server and engine on the tiny model directory. The expected ``n_keep`` values are
counted with the tiny LLM's own tokenizer from the engine's prompt strings."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from api_helpers import (
    GREEDY,
    ServerProcess,
    assert_error,
    assert_usable,
    generate,
    init,
    prefill,
    session_status,
    start_server,
    stop_server,
)

import omni_engine
from omni_app.tiny_models.llm import llm_file_name

VOICE_SECONDS = 6.016  # the reference's default voice length
VOICE_ROWS = 61  # 6.016 s -> 61 LLM rows (pipeline.md §3.1)
ONE_SECOND_ROWS = 10


def tone(seconds: float, frequency: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * 16000)) / 16000
    return (0.4 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = 16000, file_format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=file_format)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


VOICE_WAV = wav_bytes(tone(VOICE_SECONDS))


def post_init(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/omni/init_sys_prompt", json={**GREEDY, **body})


@pytest.fixture(scope="module")
def llm(tiny_llm_path: Path) -> omni_engine.Llm:
    return omni_engine.Llm(str(tiny_llm_path), n_ctx=256)


def n_tokens(llm: omni_engine.Llm, text: str) -> int:
    return len(llm.tokenize(text))


def prompt_lengths(llm: omni_engine.Llm, media: str = "audio", language: str = "en") -> tuple[int, int, int]:
    """(text-only prompt, voice prefix, voice suffix) in tokens."""
    prompt = omni_engine.internals.system_prompt(media, language)
    text_only, prefix, suffix = (n_tokens(llm, prompt[part]) for part in ("text_only", "prefix", "suffix"))
    return text_only, prefix, suffix


def voice_n_keep(llm: omni_engine.Llm, rows: int, media: str = "audio", language: str = "en") -> int:
    _, prefix, suffix = prompt_lengths(llm, media, language)
    return prefix + rows + suffix


def text_only_n_keep(llm: omni_engine.Llm, media: str = "audio", language: str = "en") -> int:
    return prompt_lengths(llm, media, language)[0]


# ----- the ref_audio field ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("media_type", "language"), [("audio", "en"), ("omni", "zh")])
def test_a_voice_goes_into_the_system_prompt_and_survives_reset(client, llm, media_type, language):
    plain = init(client, media_type=media_type, language=language)
    assert plain["ref_voice"] is None
    assert plain["n_keep"] == plain["n_past"] == text_only_n_keep(llm, media_type, language)

    voiced = init(client, media_type=media_type, language=language, ref_audio=b64(VOICE_WAV))
    expected_n_keep = voice_n_keep(llm, VOICE_ROWS, media_type, language)
    assert voiced["ref_voice"] == {"seconds": VOICE_SECONDS, "source": "request"}
    assert voiced["n_keep"] == voiced["n_past"] == expected_n_keep
    assert voiced["n_keep"] > plain["n_keep"]
    status = session_status(client)
    assert (status["n_keep"], status["ref_voice"]) == (expected_n_keep, voiced["ref_voice"])

    assert_usable(client)  # a text turn after the voice prompt
    assert session_status(client)["n_past"] > expected_n_keep
    reset = client.post("/omni/reset").json()
    assert (reset["n_keep"], reset["n_past"]) == (expected_n_keep, expected_n_keep)
    assert session_status(client)["ref_voice"] == voiced["ref_voice"]

    again = init(client, media_type=media_type, language=language)
    assert (again["n_keep"], again["ref_voice"]) == (plain["n_keep"], None)


def test_raw_float32_voice_and_a_one_second_voice(client, llm):
    raw = init(client, ref_audio=b64(tone(1.0).astype("<f4").tobytes()))
    assert raw["ref_voice"] == {"seconds": 1.0, "source": "request"}
    assert raw["n_keep"] == voice_n_keep(llm, ONE_SECOND_ROWS)


def answer_with_voice(client: httpx.Client, voice: np.ndarray) -> str:
    init(client, ref_audio=b64(wav_bytes(voice)))
    prefill(client, "hello")
    return generate(client, max_new_tokens=6).text


def test_the_voice_samples_reach_the_model(client):
    with_tone = answer_with_voice(client, tone(VOICE_SECONDS))
    assert answer_with_voice(client, tone(VOICE_SECONDS)) == with_tone  # greedy: same voice, same answer
    assert answer_with_voice(client, np.zeros(round(VOICE_SECONDS * 16000), np.float32)) != with_tone


SILENT_61S_FLAC = wav_bytes(np.zeros(61 * 8000, np.float32), 8000, "FLAC")
BAD_VOICES = [
    ("bad_base64", "not base64!", 400, "ref_audio: not valid base64 ("),
    (
        "nan_raw",
        b64(np.array([0.0, 0.1, np.nan, 0.2], "<f4").tobytes()),
        400,
        "ref_audio contains NaN or infinite samples (1 of 4, the first at sample 2)",
    ),
    ("empty_wav", b64(wav_bytes(np.zeros(0, np.float32))), 400, "ref_audio is empty (0 samples)"),
    ("odd_bytes", b64(b"hello"), 400, "ref_audio cannot be decoded: it is not a sound file"),
    (
        "too_long",
        b64(SILENT_61S_FLAC),
        413,
        "ref_audio is 61.00 s long; the limit is 60 s (--max-audio-seconds)",
    ),
]


@pytest.mark.parametrize(
    ("ref_audio", "status", "message"), [case[1:] for case in BAD_VOICES], ids=[c[0] for c in BAD_VOICES]
)
def test_a_bad_voice_is_4xx_naming_ref_audio_and_changes_nothing(client, llm, ref_audio, status, message):
    init(client)
    prefill(client, "hello")
    before = session_status(client)
    response = post_init(client, ref_audio=ref_audio)
    assert_error(response, status, message, prefix_endings=("(", "file"))
    assert session_status(client) == before  # the conversation in progress is untouched
    assert_usable(client)
    after = init(client)
    assert (after["n_keep"], after["ref_voice"]) == (text_only_n_keep(llm), None)


def test_an_empty_ref_audio_string_means_no_voice(client, llm):
    body = init(client, ref_audio="")
    assert (body["n_keep"], body["ref_voice"]) == (text_only_n_keep(llm), None)


# ----- serve --ref-audio (with a small context, for the engine's refusal) ----------------------------------
@pytest.fixture(scope="module")
def voice_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("voice") / "voice.wav"
    path.write_bytes(VOICE_WAV)
    return path


@pytest.fixture(scope="module")
def default_voice_server(
    tiny_model_dir: Path, voice_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("default_voice_server") / "server.log"
    running = start_server(
        tiny_model_dir, log_path, "--ref-audio", str(voice_file), "--n-ctx", "256", "--threads", "2"
    )
    yield running
    stop_server(running)


def test_the_ref_audio_flag_is_the_default_voice(default_voice_server, llm):
    with default_voice_server.client() as client:
        default = init(client)
        assert default["ref_voice"] == {"seconds": VOICE_SECONDS, "source": "--ref-audio"}
        assert default["n_keep"] == voice_n_keep(llm, VOICE_ROWS)
        assert session_status(client)["ref_voice"] == default["ref_voice"]
        assert_usable(client)

        requested = init(client, ref_audio=b64(wav_bytes(tone(1.0))))
        assert requested["ref_voice"] == {"seconds": 1.0, "source": "request"}
        assert requested["n_keep"] == voice_n_keep(llm, ONE_SECOND_ROWS)

        without = init(client, ref_audio="")
        assert (without["n_keep"], without["ref_voice"]) == (text_only_n_keep(llm), None)
        assert without["n_keep"] < default["n_keep"]
        assert init(client)["ref_voice"] == default["ref_voice"]


def test_a_voice_that_does_not_fit_the_context_is_413_and_init_works_again(default_voice_server, llm):
    with default_voice_server.client() as client:
        init(client)
        response = post_init(client, ref_audio=b64(tone(25.0).tobytes()))  # 250 rows > n_ctx 256 - prefix
        assert response.status_code == 413
        prefix = prompt_lengths(llm)[1]
        assert response.json() == {
            "error": "the system prompt does not fit the context (n_ctx 256, system prompt 0 tokens, "
            f"{prefix} in use): use a shorter reference voice or a larger n_ctx"
        }
        status = session_status(client)
        assert (status["state"], status["ref_voice"]) == ("no_session", None)
        refused = client.post("/omni/streaming_prefill", json={"text": "hello"})
        assert refused.status_code == 400
        assert refused.json() == {"error": "no active session: call /omni/init_sys_prompt first"}
        assert init(client)["ref_voice"] == {"seconds": VOICE_SECONDS, "source": "--ref-audio"}
        assert_usable(client)


# ----- a model directory without the audio stage ------------------------------------------------------------
@pytest.fixture(scope="module")
def llm_only_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("llm_only_voice")
    shutil.copyfile(tiny_model_dir / llm_file_name("f16"), model_dir / llm_file_name("f16"))
    return model_dir


def test_a_voice_without_the_audio_stage_is_400_and_init_without_works(llm_only_dir, llm):
    running = start_server(llm_only_dir, llm_only_dir / "server.log", "--threads", "2")
    try:
        with running.client() as client:
            response = post_init(client, ref_audio=b64(VOICE_WAV))
            assert response.status_code == 400
            assert response.json() == {
                "error": "the reference voice needs the audio encoder (audio/MiniCPM-o-4_5-audio-F16.gguf), "
                "which this model directory does not have"
            }
            body = init(client)
            assert (body["n_keep"], body["ref_voice"]) == (text_only_n_keep(llm), None)
            assert_usable(client)
    finally:
        stop_server(running)


# ----- serve refuses an unusable --ref-audio before starting ---------------------------------------------
def serve_exit(model_dir: Path, ref_audio: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "omni_app", "serve", "--model-dir", str(model_dir), "--port", "9"]
    return subprocess.run(
        [*command, "--ref-audio", ref_audio], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_missing_ref_audio_file_exits_naming_the_path(tiny_model_dir, tmp_path):
    missing = str(tmp_path / "nonexistent.wav")
    result = serve_exit(tiny_model_dir, missing)
    assert result.returncode == 2
    assert f"--ref-audio {missing}: cannot read the file (No such file or directory)" in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_an_undecodable_ref_audio_file_exits_naming_the_path(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    result = serve_exit(tiny_model_dir, str(broken))
    assert result.returncode == 2
    assert f"--ref-audio {broken} looks like a WAV file but cannot be decoded" in result.stderr


def test_ref_audio_with_a_model_directory_without_audio_exits(llm_only_dir, voice_file):
    result = serve_exit(llm_only_dir, str(voice_file))
    assert result.returncode == 2
    assert "--ref-audio needs the audio encoder stage" in result.stderr

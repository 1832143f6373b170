"""Speech out over HTTP (issue 5): the real server and engine on the tiny model directory, which has the TTS
and Token2Wav files, so every speaking answer streams `audio` events (app-api.md §3: base64 int16 PCM at
24 kHz) next to its text and tts_chunk events, all before the stats and done events.

Stream arithmetic (pipeline.md §8, token2wav.md §5): 3 silence tokens lead every stream, each speech token
is 960 samples, so an answer with N speech tokens has 960 * (3 + N) samples; its windows of 28 tokens emit
20160 samples (the first), then 24000 each, and the final window (the 3..27 tokens left) the rest.

The audio of an answer is compared with a fresh `omni_engine.Token2Wav` run on the answer's speech tokens (the
tts_chunk events carry them) in this process. A fresh Token2Wav is bit-exact whatever its thread count and
however the tokens are split into pushes, and every stream restarts the vocoder's NSF noise from its seed, so
the server's Token2Wav (which has run earlier streams) must give the same samples on the CPU. On a GPU a few
LSB of difference are allowed (the two instances may run on different backends)."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_helpers import (
    ServerProcess,
    SseReader,
    assert_well_formed,
    generate,
    init,
    prefill,
    start_server,
    stop_server,
    turn,
)

from omni_app.tiny_models.llm import llm_file_name
from omni_app.tiny_models.token2wav import TOKEN2WAV_DIR

PCM_RATE = 24000
SAMPLES_PER_TOKEN = 960
SILENCE_TOKENS = 3
WINDOW_TOKENS = 25
FIRST_WINDOW_SAMPLES = 20160
WINDOW_SAMPLES = 24000
AUDIO_KEYS = {"text", "wav", "sample_rate", "n_input_tokens"}
LONG_ANSWER = 400
SPOKEN_ANSWER = 40  # LLM tokens: 4 text chunks of up to 20 speech tokens each -> several windows
NOISE_LSB = 0 if int(os.environ.get("OMNI_TEST_N_GPU_LAYERS", "0")) == 0 else 64  # see the module docstring


# ----- helpers -------------------------------------------------------------------------------------------
def pcm_chunks(stream: SseReader) -> list[np.ndarray]:
    return [
        np.frombuffer(base64.b64decode(data["chunk_data"]["wav"]), dtype="<i2")
        for data in stream.all("audio")
    ]


def speech_tokens(stream: SseReader) -> list[int]:
    return [code for chunk in stream.tts_chunks for code in chunk["speech_tokens"]]


def assert_spoken_answer_well_formed(stream: SseReader, reason: str) -> None:
    """The shared text/tts_chunk/stats/done checks on the stream without its audio events, then: every audio
    event comes before the stats, with exactly the reference keys."""
    without_audio = [message for message in stream.messages if message.event != "audio"]
    assert_well_formed(SseReader(lines=stream.lines, messages=without_audio), reason)
    names = stream.names
    assert "audio" not in names[names.index("stats") :], names
    for data in stream.all("audio"):
        assert set(data) == {"chunk_data"}
        chunk = data["chunk_data"]
        assert set(chunk) == AUDIO_KEYS, chunk
        assert (chunk["text"], chunk["sample_rate"]) == ("", PCM_RATE)
        assert isinstance(chunk["n_input_tokens"], int) and chunk["n_input_tokens"] > 0
        assert chunk["wav"] != "" and len(base64.b64decode(chunk["wav"])) % 2 == 0


def window_sizes(n_tokens: int) -> list[int]:
    """Samples of each audio event of a whole stream of n_tokens speech tokens."""
    n_windows = n_tokens // WINDOW_TOKENS
    sizes = [FIRST_WINDOW_SAMPLES] + [WINDOW_SAMPLES] * (n_windows - 1) if n_windows else []
    return [*sizes, SAMPLES_PER_TOKEN * (SILENCE_TOKENS + n_tokens) - sum(sizes)]


def window_tokens(n_tokens: int) -> list[int]:
    """n_input_tokens of each audio event of that stream: 28 per window, then what is left for the last."""
    n_windows = n_tokens // WINDOW_TOKENS
    return [WINDOW_TOKENS + SILENCE_TOKENS] * n_windows + [
        SILENCE_TOKENS + n_tokens - WINDOW_TOKENS * n_windows
    ]


def token2wav_pcm(model_dir: Path, tokens: list[int]) -> np.ndarray:
    """A fresh Token2Wav's PCM of a whole stream, as int16 the way the engine converts (clip, scale by 32767,
    truncate)."""
    import omni_engine as oe

    t2w = oe.Token2Wav(str(model_dir / TOKEN2WAV_DIR), use_gpu=oe.system_info()["has_gpu"], n_threads=2)
    pcm = t2w.push(tokens, True)
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)


def assert_token2wav_of_its_speech(model_dir: Path, stream: SseReader) -> None:
    expected = token2wav_pcm(model_dir, speech_tokens(stream)).astype(np.int32)
    audio = np.concatenate(pcm_chunks(stream)).astype(np.int32)
    assert audio.shape == expected.shape
    assert np.abs(audio - expected).max() <= NOISE_LSB


def spoken_answer(client: httpx.Client, text: str = "Tell me about the weather.") -> SseReader:
    stream = turn(client, text, max_new_tokens=SPOKEN_ANSWER)
    assert_spoken_answer_well_formed(stream, "max_tokens")
    return stream


def assert_whole_stream(model_dir: Path, stream: SseReader) -> None:
    """A complete answer: its audio events are the windows of its speech tokens, and their PCM is what a fresh
    Token2Wav makes of those tokens."""
    n_tokens = len(speech_tokens(stream))
    assert n_tokens >= 2 * WINDOW_TOKENS, "the answer should span several windows"
    assert [chunk.size for chunk in pcm_chunks(stream)] == window_sizes(n_tokens)
    assert [data["chunk_data"]["n_input_tokens"] for data in stream.all("audio")] == window_tokens(n_tokens)
    stats = stream.only("stats")["stats"]
    assert stats["audio_samples"] == SAMPLES_PER_TOKEN * (SILENCE_TOKENS + n_tokens)
    assert_token2wav_of_its_speech(model_dir, stream)


def stream_and_interrupt(server: ServerProcess, client: httpx.Client, path: str) -> SseReader:
    """A long speaking answer, interrupted through `path` (stop/break) from another connection as soon as
    the first audio event arrived."""
    prefill(client, "Tell me a very long story.")
    reader = SseReader()
    with client.stream("POST", "/omni/streaming_generate", json={"max_new_tokens": LONG_ANSWER}) as response:
        for message in reader.iterate(response):
            if message.event == "audio" and reader.names.count("audio") == 1:
                with server.client() as other_connection:
                    assert other_connection.post(path).json()["was_generating"] is True
    return reader


# ----- a speaking answer ---------------------------------------------------------------------------------
def test_a_speaking_answer_streams_its_audio_before_the_stats(client, tiny_model_dir):
    started = init(client, tts_seed=5)
    assert (started["stages"]["tts"], started["stages"]["token2wav"]) == (True, True)
    assert client.get("/health").json()["stages"]["token2wav"] is True
    stream = spoken_answer(client)
    assert_whole_stream(tiny_model_dir, stream)

    chunks = pcm_chunks(stream)
    assert all(np.abs(chunk).max() > 0 for chunk in chunks)  # random weights still make a signal
    stats = stream.only("stats")["stats"]
    assert sum(chunk.size for chunk in chunks) == stats["audio_samples"]
    assert stats["token2wav_ms"] > 0
    assert 0 <= stats["first_audio_ms"] <= stats["total_ms"]


def test_the_same_seeds_give_the_same_speech_and_audio_after_a_reset(client, tiny_model_dir):
    init(client, tts_seed=11)
    first = spoken_answer(client)
    assert client.post("/omni/reset").status_code == 200
    again = spoken_answer(client)
    assert speech_tokens(again) == speech_tokens(first)
    assert_whole_stream(tiny_model_dir, first)
    assert_whole_stream(tiny_model_dir, again)


def test_a_text_only_session_has_no_audio(client):
    init(client, speak=False)
    stream = turn(client, "Tell me about the weather.", max_new_tokens=SPOKEN_ANSWER)
    assert_spoken_answer_well_formed(stream, "max_tokens")
    assert "audio" not in stream.names and "tts_chunk" not in stream.names
    stats = stream.only("stats")["stats"]
    assert (stats["audio_samples"], stats["token2wav_ms"], stats["first_audio_ms"]) == (0, 0.0, -1.0)


# ----- stop and break ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "reason"), [("/omni/stop", "stop"), ("/omni/break", "break")])
def test_an_interrupted_answer_cuts_its_audio_and_the_next_answer_is_whole(
    server, client, tiny_model_dir, path, reason
):
    init(client, tts_seed=7)
    cut = stream_and_interrupt(server, client, path)
    assert_spoken_answer_well_formed(cut, reason)
    chunks = pcm_chunks(cut)
    stats = cut.only("stats")["stats"]
    assert stats["decode_tokens"] < LONG_ANSWER
    # only whole non-final windows: the window in flight at the stop is dropped, nothing is flushed
    assert [chunk.size for chunk in chunks] == [FIRST_WINDOW_SAMPLES] + [WINDOW_SAMPLES] * (len(chunks) - 1)
    assert {data["chunk_data"]["n_input_tokens"] for data in cut.all("audio")} == {
        WINDOW_TOKENS + SILENCE_TOKENS
    }
    assert stats["audio_samples"] == sum(chunk.size for chunk in chunks)
    assert stats["audio_samples"] < SAMPLES_PER_TOKEN * (SILENCE_TOKENS + stats["speech_tokens"])

    # the next answer is a fresh, complete stream: what a new Token2Wav makes of its speech tokens
    assert_whole_stream(tiny_model_dir, spoken_answer(client, "And now something short."))


# ----- a model directory without the Token2Wav files -----------------------------------------------------
@pytest.fixture(scope="module")
def no_token2wav_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    model_dir = tmp_path_factory.mktemp("no_token2wav")
    shutil.copyfile(tiny_model_dir / llm_file_name("f16"), model_dir / llm_file_name("f16"))
    shutil.copytree(tiny_model_dir / "tts", model_dir / "tts")
    running = start_server(model_dir, model_dir / "server.log", "--threads", "2")
    yield running
    stop_server(running)


def test_without_the_token2wav_files_an_answer_has_speech_tokens_but_no_audio(
    no_token2wav_server: ServerProcess,
) -> None:
    with no_token2wav_server.client() as client:
        started = init(client, tts_seed=5)
        assert (started["stages"]["tts"], started["stages"]["token2wav"]) == (True, False)
        assert client.get("/health").json()["stages"]["token2wav"] is False
        prefill(client, "Tell me about the weather.")
        stream = generate(client, max_new_tokens=SPOKEN_ANSWER)
        assert_spoken_answer_well_formed(stream, "max_tokens")
        assert "audio" not in stream.names
        assert len(speech_tokens(stream)) > 0
        stats = stream.only("stats")["stats"]
        assert (stats["audio_samples"], stats["token2wav_ms"], stats["first_audio_ms"]) == (0, 0.0, -1.0)

"""Spoken answers over HTTP (issue 4): the real server and engine on the tiny model directory, which has the
TTS files, so a speak session streams `tts_chunk` events (speech tokens per text chunk) next to the text."""

from __future__ import annotations

import httpx
import pytest
from api_helpers import (
    GREEDY,
    TTS_TOKENS_PER_CHUNK,
    SseReader,
    assert_usable,
    assert_well_formed,
    init,
    session_status,
    turn,
)

N_CODES = 6562  # speech codes 0..6561; 6561 is the speech end and never sent
MS_PER_SPEECH_TOKEN = 40
GROUP_SIZE = 25  # speech tokens per Token2Wav window
TTS_DEFAULTS = {
    "temperature": 0.8,
    "top_p": 0.85,
    "top_k": 25,
    "repetition_penalty": 1.05,
    "penalty_window": 16,
    "min_keep": 3,
    "max_tokens_per_chunk": 500,
    "seed": -1,
}


def speak_turn(client: httpx.Client, max_new_tokens: int = 25) -> SseReader:
    stream = turn(client, "Tell me about the weather.", max_new_tokens=max_new_tokens)
    assert_well_formed(stream, "max_tokens")
    return stream


def speech_of(stream: SseReader) -> list[list[int]]:
    return [chunk["speech_tokens"] for chunk in stream.tts_chunks]


# ----- the tts_chunk event --------------------------------------------------------------------------------
def test_a_speak_turn_streams_tts_chunks_after_their_text(client):
    started = init(client, tts_seed=5)
    assert (started["speak"], started["stages"]["tts"]) == (True, True)
    stream = speak_turn(client)
    chunks = stream.tts_chunks
    assert len(chunks) >= 2  # 25 answer tokens: chunks of 10 TTS-valid tokens, the last one shorter
    for index, chunk in enumerate(chunks):
        assert set(chunk) == {"text", "n_speech_tokens", "chunk_idx", "audio_duration_ms", "speech_tokens"}
        assert chunk["chunk_idx"] == index
        assert isinstance(chunk["text"], str)
        codes = chunk["speech_tokens"]
        assert all(isinstance(code, int) and 0 <= code < N_CODES - 1 for code in codes), codes
        assert chunk["n_speech_tokens"] == len(codes) <= TTS_TOKENS_PER_CHUNK
        assert chunk["audio_duration_ms"] == MS_PER_SPEECH_TOKEN * len(codes)
    assert "".join(chunk["text"] for chunk in chunks) == stream.text
    assert stream.tts_chunks[0]["text"] != ""

    # a chunk is spoken after its text was streamed: the text before each tts_chunk covers the chunks so far
    spoken, streamed = "", ""
    for message in stream.messages:
        if message.event == "text":
            streamed += message.data["chunk_data"]["text"]
        elif message.event == "tts_chunk":
            spoken += message.data["tts_chunk"]["text"]
            assert streamed.startswith(spoken)

    stats = stream.only("stats")["stats"]
    assert stats["speech_tokens"] == sum(len(codes) for codes in speech_of(stream)) > 0
    assert stats["tts_ms"] > 0
    has_group = stats["speech_tokens"] >= GROUP_SIZE
    assert (stats["first_speech_group_ms"] >= 0) == has_group
    if not has_group:
        assert stats["first_speech_group_ms"] == -1


def test_a_text_only_session_has_no_tts_chunks(client):
    started = init(client, speak=False)
    assert started["speak"] is False
    stream = turn(client, "Tell me about the weather.", max_new_tokens=25)
    assert_well_formed(stream, "max_tokens")
    assert "tts_chunk" not in stream.names and stream.text != ""
    stats = stream.only("stats")["stats"]
    assert (stats["speech_tokens"], stats["tts_ms"], stats["first_speech_group_ms"]) == (0, 0.0, -1.0)
    assert init(client)["speak"] is True  # the default again


# ----- reproducibility ------------------------------------------------------------------------------------
def test_the_tts_seed_makes_the_speech_tokens_reproducible(client):
    init(client, tts_seed=11)
    first = speech_of(speak_turn(client))
    assert client.post("/omni/reset").status_code == 200
    again = speak_turn(client)
    assert speech_of(again) == first and sum(map(len, first)) > 0

    init(client, tts_seed=12)  # same greedy text, another TTS seed: other speech tokens
    other = speak_turn(client)
    assert other.text == again.text
    assert speech_of(other) != first


def test_greedy_tts_gives_the_same_speech_whatever_the_seed(client):
    init(client, tts_temperature=0, tts_seed=1)
    first = speech_of(speak_turn(client, max_new_tokens=12))
    init(client, tts_temperature=0, tts_seed=2)
    assert speech_of(speak_turn(client, max_new_tokens=12)) == first


def test_tts_max_tokens_per_chunk_bounds_each_chunk(client):
    init(client, tts_max_tokens_per_chunk=3, tts_seed=4)
    chunks = speak_turn(client, max_new_tokens=12).tts_chunks
    assert chunks and all(chunk["n_speech_tokens"] <= 3 for chunk in chunks)


# ----- the init's TTS fields ------------------------------------------------------------------------------
def test_init_echoes_the_tts_sampling_defaults_and_the_given_values(client):
    defaults = {key: value for key, value in GREEDY.items() if not key.startswith("tts_")}
    response = client.post("/omni/init_sys_prompt", json=defaults)
    assert response.status_code == 200, response.text
    assert response.json()["tts_sampling"] == TTS_DEFAULTS

    given = {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 7,
        "repetition_penalty": 1.2,
        "penalty_window": 8,
        "min_keep": 2,
        "max_tokens_per_chunk": 30,
        "seed": 42,
    }
    body = init(client, **{f"tts_{name}": value for name, value in given.items()})
    assert body["tts_sampling"] == given
    assert body["sampling"]["temperature"] == 0.0  # the LLM's sampling is separate


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tts_temperature", 0),
        ("tts_top_p", 1),
        ("tts_top_k", 0),
        ("tts_repetition_penalty", 0.5),
        ("tts_penalty_window", 0),
        ("tts_min_keep", 1),
        ("tts_max_tokens_per_chunk", 1),
        ("tts_max_tokens_per_chunk", 500),
        ("tts_seed", -1),
    ],
)
def test_tts_fields_at_their_limits_are_accepted(client, field, value):
    assert init(client, **{field: value})["tts_sampling"][field.removeprefix("tts_")] == value


BAD_TTS_FIELDS = [
    ("tts_temperature", -0.1),
    ("tts_temperature", "hot"),
    ("tts_top_p", 0),
    ("tts_top_p", 1.01),
    ("tts_top_k", -1),
    ("tts_top_k", 2.5),
    ("tts_repetition_penalty", 0),
    ("tts_repetition_penalty", -1.05),
    ("tts_penalty_window", -1),
    ("tts_min_keep", 0),
    ("tts_max_tokens_per_chunk", 0),
    ("tts_max_tokens_per_chunk", 501),
    ("tts_seed", -2),
    ("tts_seed", "random"),
]


@pytest.mark.parametrize(("field", "value"), BAD_TTS_FIELDS)
def test_a_bad_tts_field_is_422_naming_it_and_changes_nothing(client, field, value):
    started = init(client, tts_seed=3)
    response = client.post("/omni/init_sys_prompt", json={**GREEDY, field: value})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith(f"invalid request: {field}: "), error
    status = session_status(client)
    assert (status["state"], status["n_past"]) == ("idle", started["n_past"])


def test_the_session_still_speaks_after_bad_tts_fields(client):
    init(client, tts_seed=3)
    for field, value in BAD_TTS_FIELDS:
        assert client.post("/omni/init_sys_prompt", json={**GREEDY, field: value}).status_code == 422
    assert_usable(client)
    assert speak_turn(client, max_new_tokens=4).tts_chunks != []

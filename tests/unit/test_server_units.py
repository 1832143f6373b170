"""Pure-Python parts of the server: SSE formatting, request validation, body limit, session ownership.

No engine is loaded here (every request below is answered before the engine would be needed); the real
server with the real engine is tested in tests/api.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from omni_app import schemas
from omni_app.server import (
    BodyLimitMiddleware,
    ServerSettings,
    SessionOwnership,
    create_app,
    engine_event_to_sse,
    sse_done_marker,
)


def sse_bytes(event: dict) -> bytes:
    message = engine_event_to_sse(event)
    assert message is not None
    return message.encode()


def test_text_event_keeps_reference_keys_and_unescaped_utf8():
    assert sse_bytes({"type": "text", "turn": 1, "text": "你好 ok"}) == (
        'event: text\ndata: {"chunk_data":{"text":"你好 ok","wav":"","sample_rate":24000}}\n\n'.encode()
    )


def test_done_error_listen_and_marker_framing():
    assert sse_bytes({"type": "end_of_turn", "turn": 3, "reason": "stop"}) == (
        b'event: done\ndata: {"done":true,"reason":"stop","turn":3}\n\n'
    )
    assert (
        sse_bytes({"type": "error", "turn": 3, "message": "boom"})
        == b'event: error\ndata: {"error":"boom"}\n\n'
    )
    assert sse_bytes({"type": "listen"}) == b'event: listen\ndata: {"is_listen":true}\n\n'
    assert sse_done_marker().encode() == b"data: [DONE]\n\n"


def test_stats_event_carries_all_engine_fields():
    stats = {
        "turn": 2,
        "prefill_tokens": 5,
        "prefill_ms": 1.5,
        "ttft_ms": 2.0,
        "decode_tokens": 7,
        "decode_ms": 3.0,
        "tokens_per_s": 2333.3,
        "total_ms": 5.0,
        "speech_tokens": 30,
        "tts_ms": 4.5,
        "first_speech_group_ms": 4.0,
    }
    raw = sse_bytes({"type": "stats", **stats}).decode()
    assert raw.startswith("event: stats\ndata: ")
    assert json.loads(raw.split("data: ", 1)[1]) == {"stats": stats}


def test_audio_and_tts_chunk_events_match_reference_payloads():
    pcm = np.array([1, -2], dtype=np.int16)
    audio = sse_bytes({"type": "audio", "pcm": pcm, "sample_rate": 24000, "n_input_tokens": 28}).decode()
    assert audio.startswith("event: audio\n")
    assert json.loads(audio.split("data: ", 1)[1]) == {
        "chunk_data": {"text": "", "wav": "AQD+/w==", "sample_rate": 24000, "n_input_tokens": 28}
    }
    codes = [5, 6561 - 1, 0]
    event = {"type": "tts_chunk", "text": "hi", "n_speech_tokens": 3, "chunk_idx": 2, "speech_tokens": codes}
    tts = sse_bytes(event).decode()
    assert tts.startswith("event: tts_chunk\n")
    assert json.loads(tts.split("data: ", 1)[1]) == {
        "tts_chunk": {
            "text": "hi",
            "n_speech_tokens": 3,
            "chunk_idx": 2,
            "audio_duration_ms": 120,
            "speech_tokens": codes,
        }
    }


def test_unknown_engine_event_is_not_forwarded():
    assert engine_event_to_sse({"type": "future_thing"}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "audio"),
        ("audio", "audio"),
        (" Audio ", "audio"),
        (2, "omni"),
        ("omni", "omni"),
        ("video", "omni"),
    ],
)
def test_media_type_accepted_values(value, expected):
    assert schemas.parse_media_type(value) == expected
    assert schemas.InitRequest(media_type=value).media_type == expected


@pytest.mark.parametrize("value", [0, 3, True, "voice", "", 1.5])
def test_media_type_rejected_values(value):
    with pytest.raises(ValueError, match="must be 1 or 'audio'"):
        schemas.parse_media_type(value)


def test_msg_type_is_the_media_type_fallback():
    assert schemas.InitRequest.model_validate({"msg_type": 2}).media_type == "omni"
    assert schemas.InitRequest.model_validate({"msg_type": 2, "media_type": 1}).media_type == "audio"


def test_sampling_overrides_only_lists_given_fields():
    request = schemas.InitRequest(temperature=0, seed=7, length_penalty=1.1)
    assert request.sampling_overrides() == {"temperature": 0, "seed": 7, "length_penalty": 1.1}


def test_tts_sampling_overrides_drop_the_prefix_and_only_list_given_fields():
    request = schemas.InitRequest(temperature=0, tts_top_k=5, tts_seed=2, tts_max_tokens_per_chunk=40)
    assert request.tts_sampling_overrides() == {"top_k": 5, "seed": 2, "max_tokens_per_chunk": 40}
    assert request.sampling_overrides() == {"temperature": 0}
    assert schemas.InitRequest().tts_sampling_overrides() == {}


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_ownership_blocks_other_clients_until_idle_timeout():
    clock = FakeClock()
    ownership = SessionOwnership(idle_timeout_s=60, clock=clock)
    ownership.check("anyone")  # nothing claimed yet
    ownership.claim("alice", generating=False)
    ownership.check("alice")
    for intruder in ("bob", None):
        with pytest.raises(Exception, match="owned by another client") as info:
            ownership.check(intruder)
        assert info.value.status_code == 409
    with pytest.raises(Exception, match="idle for 60 s"):
        ownership.claim("bob", generating=False)
    clock.now += 61
    with pytest.raises(Exception, match="owned by another client"):
        ownership.claim("bob", generating=True)  # never while an answer runs
    ownership.claim("bob", generating=False)
    with pytest.raises(Exception, match="anonymous|another client"):
        ownership.check("alice")


def test_anonymous_owner_is_named_in_the_conflict_message():
    ownership = SessionOwnership(idle_timeout_s=60, clock=FakeClock())
    ownership.claim(None, generating=False)
    with pytest.raises(Exception, match="anonymous client"):
        ownership.check("bob")


@pytest.fixture
def client(tmp_path):
    settings = ServerSettings(model_dir=tmp_path, max_body_mb=0.001)  # 1048 bytes
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_health_before_init(client, tmp_path):
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["backend"] == "omni_engine"
    assert (body["initialized"], body["loading"], body["duplex_mode"]) == (False, False, False)
    assert body["model_dir"] == str(tmp_path)
    assert body["session"]["state"] == "not_initialized"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"media_type": 3}, "media_type"),
        ({"media_type": "voice"}, "media_type"),
        ({"language": "fr"}, "language"),
        ({"length_penalty": 0}, "length_penalty"),
        ({"length_penalty": "long"}, "length_penalty"),
        ({"temperature": -1}, "temperature"),
        ({"duplex_mode": "sometimes"}, "duplex_mode"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_init_validation_errors_name_the_field(client, payload, field):
    response = client.post("/omni/init_sys_prompt", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert body["error"].startswith(f"invalid request: {field}: ")
    assert body["detail"][0]["loc"] == ["body", field]
    assert "input" not in body["detail"][0]
    assert all(isinstance(value, (str, int, float)) for value in body["detail"][0].get("ctx", {}).values())


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_api_bodies_are_read_as_json_whatever_the_content_type(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/omni/init_sys_prompt", content=b'{"language": "fr"}', headers=headers)
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request: language: ")


def test_bad_json_is_400(client):
    response = client.post(
        "/omni/init_sys_prompt", content=b'{"language": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("request body is not valid JSON")


def test_non_object_body_is_422(client):
    response = client.post("/omni/streaming_prefill", json=["text"])
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request: body: ")


def test_oversized_body_is_413(client):
    response = client.post("/omni/streaming_prefill", json={"text": "x" * 2000})
    assert response.status_code == 413
    assert "limit is 0.001 MB" in response.json()["error"]


def test_body_limit_counts_chunked_bodies():
    responses = []

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("app called for an oversized body")

    async def main():
        chunks = [b"a" * 600, b"b" * 600, b""]

        async def receive():
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message):
            responses.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        await BodyLimitMiddleware(app, max_bytes=1000, max_mb_label="0.001")(scope, receive, send)

    asyncio.run(main())
    assert responses[0]["status"] == 413
    assert b"1200 bytes read" in responses[1]["body"]


def test_prefill_checks_base64_before_init(client):
    response = client.post("/omni/streaming_prefill", json={"audio": "not base64!!"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("audio: not valid base64")
    response = client.post("/omni/streaming_prefill", json={"image": "QUJ"})  # missing padding
    assert response.status_code == 400
    assert response.json()["error"].startswith("image: not valid base64")


@pytest.mark.parametrize("path", ["/omni/streaming_prefill", "/omni/streaming_generate", "/omni/reset"])
def test_calls_before_init_are_400(client, path):
    response = client.post(path, json={"text": "hi"} if path.endswith("prefill") else None)
    assert response.status_code == 400
    assert response.json() == {"error": "engine not initialized"}


@pytest.mark.parametrize("path", ["/omni/stop", "/omni/break"])
def test_stop_and_break_before_init_are_200(client, path):
    response = client.post(path)
    assert response.status_code == 200
    assert response.json() == {"success": True, "state": "not_initialized", "was_generating": False}


def test_openapi_documents_sse_events(client):
    schema = client.get("/openapi.json").json()
    generate = schema["paths"]["/omni/streaming_generate"]["post"]["responses"]["200"]
    refs = {item["$ref"] for item in generate["content"]["text/event-stream"]["schema"]["oneOf"]}
    assert "#/components/schemas/DoneEvent" in refs and "#/components/schemas/TextEvent" in refs
    assert schema["components"]["schemas"]["DoneEvent"]["properties"]["reason"]["enum"][0] == "eos"
    assert "ChunkData" in schema["components"]["schemas"]

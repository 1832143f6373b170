"""The real server (subprocess, loopback port) with the real engine on the tiny model directory, driven over
HTTP by httpx; SSE streams are read line by line."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_helpers import (
    CLIENT_ID,
    GREEDY,
    TTS_TOKENS_PER_CHUNK,
    SseReader,
    assert_usable,
    assert_well_formed,
    generate,
    init,
    prefill,
    session_status,
    start_server,
    stop_server,
    turn,
)

LONG_ANSWER = 2000  # tokens; the tiny model practically never ends an answer on its own before this
BUSY = "while an answer is being generated"


@pytest.fixture
def session(client: httpx.Client) -> dict:
    """A fresh greedy conversation (init restarts the session)."""
    return init(client)


def wait_until_idle(client: httpx.Client, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    status = session_status(client)
    while status["state"] != "idle" and time.monotonic() < deadline:
        status = session_status(client)
    return status


# ----- init ------------------------------------------------------------------------------------------
def test_init_echoes_the_actual_settings(client):
    body = init(client, max_new_tokens=16)
    assert body["success"] is True and body["backend"] == "omni_engine"
    assert (body["media_type"], body["media_type_name"], body["duplex_mode"]) == (1, "audio", False)
    assert (body["language"], body["max_new_tokens"], body["speak"]) == ("en", 16, True)
    assert body["sampling"] == {
        "temperature": 0.0,
        "top_k": 100,
        "top_p": pytest.approx(0.8),
        "min_p": 0.0,
        "repetition_penalty": pytest.approx(1.02),
        "repetition_window": 128,
        "length_penalty": 1.0,
        "seed": 1,
    }
    assert body["length_penalty"] == 1.0
    assert body["tts_sampling"] == {
        "temperature": 0.8,
        "top_p": 0.85,
        "top_k": 25,
        "repetition_penalty": 1.05,
        "penalty_window": 16,
        "min_keep": 3,
        "max_tokens_per_chunk": TTS_TOKENS_PER_CHUNK,
        "seed": -1,
    }
    assert body["n_past"] == body["n_keep"] > 0
    assert body["stages"]["llm"] is True and body["stages"]["tts"] is True and body["tiny_demo"] is True

    other = init(client, media_type="omni", language="zh", length_penalty=1.3, top_k=5)
    assert (other["media_type"], other["media_type_name"], other["language"]) == (2, "omni", "zh")
    assert other["length_penalty"] == pytest.approx(1.3) and other["sampling"]["top_k"] == 5
    assert other["models_loaded_now"] is False
    assert_usable(client)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"media_type": 3}, "media_type"),
        ({"media_type": "pictures"}, "media_type"),
        ({"language": "fr"}, "language"),
        ({"length_penalty": -1}, "length_penalty"),
        ({"top_p": "high"}, "top_p"),
    ],
)
def test_init_rejects_bad_fields_with_422(client, session, payload, field):
    response = client.post("/omni/init_sys_prompt", json={**GREEDY, **payload})
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"invalid request: {field}: ")
    assert_usable(client)  # the running session was not touched


def test_duplex_init_is_501_until_duplex_exists(client):
    response = client.post("/omni/init_sys_prompt", json={**GREEDY, "duplex_mode": True})
    assert response.status_code == 501
    assert response.json()["error"].startswith("duplex mode is not available yet")
    init(client)
    assert_usable(client)


# ----- turns -----------------------------------------------------------------------------------------
def test_text_turn_streams_text_then_stats_then_done(client, session):
    first = prefill(client, "Hello, who are you?")
    assert first["success"] is True and first["index"] == 1 and first["n_tokens"] > 0
    with client.stream("POST", "/omni/streaming_generate", json={"max_new_tokens": 6}) as response:
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        stream = SseReader().read_all(response)
    assert_well_formed(stream, "max_tokens")
    assert stream.names.count("text") >= 1 and stream.text != ""
    for data in stream.all("text"):
        assert data == {"chunk_data": {"text": data["chunk_data"]["text"], "wav": "", "sample_rate": 24000}}
    stats = stream.only("stats")["stats"]
    assert stats["decode_tokens"] == 6
    for key in ("prefill_tokens", "prefill_ms", "ttft_ms", "decode_ms", "tokens_per_s", "total_ms"):
        assert stats[key] >= 0
    # every message is `event:` + `data:` + blank line, except the final marker
    blocks = "\n".join(stream.lines).strip("\n").split("\n\n")
    assert all(re.fullmatch(r"event: \w+\ndata: \{.*\}", block) for block in blocks[:-1]), blocks[:3]
    assert blocks[-1] == "data: [DONE]"


def test_prefill_adds_tokens_to_the_context_and_counts_calls(client, session):
    before = session_status(client)["n_past"]
    one = prefill(client, "one")
    two = prefill(client, "two three")
    assert (one["index"], two["index"]) == (1, 2)
    assert session_status(client)["n_past"] == before + one["n_tokens"] + two["n_tokens"]


def test_multi_turn_context_grows(client, session):
    n_keep = session["n_keep"]
    assert session_status(client)["n_past"] == n_keep
    turns_before = session_status(client)["turns"]
    assert_well_formed(turn(client, "first question"), "max_tokens")
    after_first = session_status(client)["n_past"]
    assert_well_formed(turn(client, "second question"), "max_tokens")
    after_second = session_status(client)
    assert n_keep < after_first < after_second["n_past"]
    assert after_second["turns"] == turns_before + 2


def test_reset_returns_to_the_system_prompt(client, session):
    first = turn(client, "remember the number seven")
    turn(client, "what number?")
    assert session_status(client)["n_past"] > session["n_keep"]
    response = client.post("/omni/reset")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "state": "reset",
        "n_past": session["n_keep"],
        "n_keep": session["n_keep"],
    }
    assert session_status(client)["n_past"] == session["n_keep"]
    again = turn(client, "remember the number seven")  # greedy: same context -> same answer
    assert again.text == first.text


def test_same_greedy_request_gives_the_same_text_after_reinit(client):
    init(client)
    first = turn(client, "Say something.", max_new_tokens=10)
    init(client)
    assert turn(client, "Say something.", max_new_tokens=10).text == first.text


def test_answer_length_follows_max_new_tokens(client, session):
    stream = turn(client, "count", max_new_tokens=3)
    assert_well_formed(stream, "max_tokens")
    assert stream.only("stats")["stats"]["decode_tokens"] == 3


def test_generate_accepts_a_per_answer_length_penalty(client, session):
    prefill(client, "hello")
    assert_well_formed(generate(client, max_new_tokens=2, length_penalty=1.5), "max_tokens")


def test_text_longer_than_the_context_is_413_and_changes_nothing(client, session):
    before = session_status(client)["n_past"]
    response = client.post("/omni/streaming_prefill", json={"text": "hello " * 20000})
    assert response.status_code == 413
    assert "does not fit the context" in response.json()["error"]
    assert session_status(client)["n_past"] == before
    assert_usable(client)


# ----- stop / break / concurrency --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "reason", "state"),
    [("/omni/stop", "stop", "generation_stopped"), ("/omni/break", "break", "break")],
)
def test_stop_or_break_from_another_connection_ends_a_long_answer(
    server, client, session, path, reason, state
):
    prefill(client, "Tell me a very long story.")
    reader = SseReader()
    with client.stream("POST", "/omni/streaming_generate", json={"max_new_tokens": LONG_ANSWER}) as response:
        for message in reader.iterate(response):
            if message.event == "text" and reader.names.count("text") == 1:
                with server.client() as other_connection:
                    control = other_connection.post(path)
                assert control.status_code == 200
                assert control.json() == {"success": True, "state": state, "was_generating": True}
    assert_well_formed(reader, reason)
    assert reader.only("stats")["stats"]["decode_tokens"] < LONG_ANSWER
    assert session_status(client)["state"] == "idle"
    assert client.post(path).json() == {"success": True, "state": "idle", "was_generating": False}
    assert_usable(client)


def test_second_generate_and_prefill_during_generation_are_409(client, session):
    prefill(client, "Tell me a very long story.")
    reader = SseReader()
    with client.stream("POST", "/omni/streaming_generate", json={"max_new_tokens": LONG_ANSWER}) as response:
        messages = reader.iterate(response)
        assert next(messages).event == "text"
        with httpx.Client(base_url=str(client.base_url), headers=client.headers, timeout=30) as other:
            second = other.post("/omni/streaming_generate", json={"max_new_tokens": 2})
            assert second.status_code == 409
            assert BUSY in second.json()["error"]
            during = other.post("/omni/streaming_prefill", json={"text": "interrupting"})
            assert during.status_code == 409
            assert BUSY in during.json()["error"]
            assert other.post("/omni/stop").json()["was_generating"] is True
        for _ in messages:
            pass
    assert_well_formed(reader, "stop")
    assert_usable(client)


def test_client_disconnect_stops_the_answer(client, session):
    prefill(client, "Tell me a very long story.")
    turns_before = session_status(client)["turns"]
    with client.stream("POST", "/omni/streaming_generate", json={"max_new_tokens": LONG_ANSWER}) as response:
        assert next(SseReader().iterate(response)).event == "text"
    # leaving the block closed the connection; the server must stop the engine by itself
    status = wait_until_idle(client)
    assert status["state"] == "idle"
    assert status["turns"] == turns_before + 1
    assert_usable(client)


def test_reset_during_generation_ends_the_stream(client, session):
    prefill(client, "Tell me a very long story.")
    reader = SseReader()
    with client.stream("POST", "/omni/streaming_generate", json={"max_new_tokens": LONG_ANSWER}) as response:
        for message in reader.iterate(response):
            if message.event == "text" and reader.names.count("text") == 1:
                with httpx.Client(base_url=str(client.base_url), headers=client.headers, timeout=30) as other:
                    assert other.post("/omni/reset").status_code == 200
    assert_well_formed(reader, "stop")
    assert session_status(client)["n_past"] == session["n_keep"]


# ----- single client rule ----------------------------------------------------------------------------
@pytest.mark.parametrize("intruder", ["someone-else", None])
def test_another_client_gets_409(server, client, session, intruder):
    with server.client(intruder) as other:
        for path, body in [
            ("/omni/init_sys_prompt", GREEDY),
            ("/omni/streaming_prefill", {"text": "hi"}),
            ("/omni/streaming_generate", {}),
            ("/omni/stop", None),
            ("/omni/break", None),
            ("/omni/reset", None),
        ]:
            response = other.post(path, json=body)
            assert response.status_code == 409, path
            assert response.json()["error"].startswith("the session is owned by another client"), path
    # the owner may also identify itself with the client_id field instead of the header
    with server.client(None) as same_owner:
        response = same_owner.post("/omni/streaming_prefill", json={"text": "hi", "client_id": CLIENT_ID})
        assert response.status_code == 200
    assert_usable(client)


# ----- bad input -------------------------------------------------------------------------------------
def test_oversized_body_is_413(client, session):
    big = {"text": "x" * (1024 * 1024 + 10)}
    response = client.post("/omni/streaming_prefill", json=big)
    assert response.status_code == 413
    assert "the limit is 1 MB" in response.json()["error"]

    def chunks():
        for _ in range(3):
            yield b"y" * (512 * 1024)

    chunked = client.post(
        "/omni/streaming_prefill", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert_usable(client)


@pytest.mark.parametrize("field", ["audio", "image"])
def test_bad_base64_is_400_naming_the_field(client, session, field):
    response = client.post("/omni/streaming_prefill", json={field: "this is not base64!"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}: not valid base64")
    assert_usable(client)


def test_empty_prefill_is_400(client, session):
    for body in ({}, {"idx": 0}, {"audio": "", "text": ""}):
        response = client.post("/omni/streaming_prefill", json=body)
        assert response.status_code == 400
        assert response.json() == {"error": "empty prefill: give at least one of audio, image or text"}
    assert_usable(client)


def test_bad_json_and_wrong_types(client, session):
    raw = client.post(
        "/omni/streaming_prefill", content=b"{text: hi}", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400
    assert raw.json()["error"].startswith("request body is not valid JSON")
    wrong = client.post("/omni/streaming_prefill", json={"text": 123})
    assert wrong.status_code == 422
    assert wrong.json()["error"].startswith("invalid request: text: ")
    generate_wrong = client.post("/omni/streaming_generate", json={"max_new_tokens": "many"})
    assert generate_wrong.status_code == 422
    assert generate_wrong.json()["error"].startswith("invalid request: max_new_tokens: ")
    bad_penalty = client.post("/omni/streaming_generate", json={"length_penalty": 0})
    assert bad_penalty.status_code == 422
    assert bad_penalty.json()["error"].startswith("invalid request: length_penalty: ")
    not_object = client.post("/omni/streaming_generate", json=[1, 2])
    assert not_object.status_code == 422
    assert_usable(client)


def test_page_and_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/static/index.html").text == page.text
    assert client.get("/docs").status_code == 200
    assert "DoneEvent" in client.get("/openapi.json").json()["components"]["schemas"]


# ----- a fresh server: before init, concurrent init, take-over ------------------------------------------
@pytest.fixture(scope="module")
def fresh_server(tiny_model_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("fresh_server") / "server.log"
    running = start_server(tiny_model_dir, log_path, "--session-idle-timeout", "0", "--language", "en")
    yield running
    stop_server(running)


def test_fresh_server_before_and_after_init(fresh_server, tiny_model_dir):
    with fresh_server.client("alice") as alice:
        health = alice.get("/health").json()
        assert health["status"] == "healthy" and health["backend"] == "omni_engine"
        assert (health["initialized"], health["loading"], health["duplex_mode"]) == (False, False, False)
        assert (health["model_dir"], health["tiny_demo"], health["stages"]) == (str(tiny_model_dir), True, {})
        assert health["engine_available"] is True and health["version"] == "0.1.0"
        for path in ("/omni/streaming_generate", "/omni/reset"):
            response = alice.post(path)
            assert (response.status_code, response.json()) == (400, {"error": "engine not initialized"})
        prefill_before = alice.post("/omni/streaming_prefill", json={"text": "hi"})
        assert (prefill_before.status_code, prefill_before.json()) == (
            400,
            {"error": "engine not initialized"},
        )
        assert alice.post("/omni/stop").json() == {
            "success": True,
            "state": "not_initialized",
            "was_generating": False,
        }
        assert alice.post("/omni/break").json()["state"] == "not_initialized"

        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(lambda _: alice.post("/omni/init_sys_prompt", json={}), range(3)))
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert sorted(r.json()["models_loaded_now"] for r in responses) == [False, False, True]
        assert fresh_server.log_text().count("loading models from") == 1
        assert responses[0].json()["language"] == "en"  # the server's --language default

        health = alice.get("/health").json()
        assert (health["initialized"], health["loading"]) == (True, False)
        assert health["stages"] == {
            "llm": True,
            "audio": True,
            "vision": True,
            "tts": True,
            "token2wav": True,
        }
        assert health["session"]["state"] == "idle" and health["session"]["owned_by_named_client"] is True


def test_fresh_server_idle_session_can_be_taken_over_but_not_while_generating(fresh_server):
    with fresh_server.client("alice") as alice, fresh_server.client("bob") as bob:
        init(alice)
        prefill(alice, "Tell me a very long story.")
        with alice.stream(
            "POST", "/omni/streaming_generate", json={"max_new_tokens": LONG_ANSWER}
        ) as response:
            messages = SseReader().iterate(response)
            assert next(messages).event == "text"
            refused = bob.post("/omni/init_sys_prompt", json=GREEDY)
            assert refused.status_code == 409
            assert alice.post("/omni/stop").json()["was_generating"] is True
            for _ in messages:
                pass
        taken = bob.post("/omni/init_sys_prompt", json=GREEDY)  # idle timeout is 0 on this server
        assert taken.status_code == 200
        assert alice.post("/omni/streaming_prefill", json={"text": "mine?"}).status_code == 409
        assert_usable(bob)

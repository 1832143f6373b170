"""Helpers for the API tests: start the real server (``python -m omni_app serve``) in a subprocess on a free
loopback port, and read its SSE streams line by line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import omni_app

CLIENT_ID = "pytest"
# The tiny TTS has random weights and rarely draws the speech end: without a small per-chunk limit every text
# chunk of a speak session would cost 500 TTS steps.
TTS_TOKENS_PER_CHUNK = 20
GREEDY = {
    "media_type": 1,
    "duplex_mode": False,
    "language": "en",
    "temperature": 0,
    "seed": 1,
    "tts_max_tokens_per_chunk": TTS_TOKENS_PER_CHUNK,
}
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, client_id: str | None = CLIENT_ID) -> httpx.Client:
        headers = {"X-Omni-Client": client_id} if client_id is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(60.0))


def start_server(model_dir: Path, log_path: Path, *extra: str) -> ServerProcess:
    env = dict(os.environ)
    package_root = str(Path(omni_app.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    for _ in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "omni_app",
            "serve",
            "--model-dir",
            str(model_dir),
            "--port",
            str(port),
        ]
        with log_path.open("w") as log_file:
            process = subprocess.Popen([*command, *extra], stdout=log_file, stderr=subprocess.STDOUT, env=env)
        server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
        if _wait_until_healthy(server):
            return server
        if "address already in use" not in server.log_text():
            break
    raise RuntimeError(f"server did not start:\n{server.log_text()}")


def _wait_until_healthy(server: ServerProcess) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.05)  # startup poll, not synchronisation between test steps
    stop_server(server)
    return False


def stop_server(server: ServerProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# ----- SSE -------------------------------------------------------------------------------------------
@dataclass
class SseMessage:
    event: str | None
    data: Any  # parsed JSON, or the string "[DONE]"


@dataclass
class SseReader:
    """Parses an SSE body line by line; keeps every raw line for framing assertions."""

    lines: list[str] = field(default_factory=list)
    messages: list[SseMessage] = field(default_factory=list)

    def iterate(self, response: httpx.Response) -> Iterator[SseMessage]:
        event: str | None = None
        data: list[str] = []
        for line in response.iter_lines():
            self.lines.append(line)
            if line == "":
                if data:
                    payload = "\n".join(data)
                    message = SseMessage(event, payload if payload == "[DONE]" else json.loads(payload))
                    self.messages.append(message)
                    yield message
                event, data = None, []
            elif line.startswith("event:"):
                event = line.removeprefix("event:").removeprefix(" ")
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").removeprefix(" "))

    def read_all(self, response: httpx.Response) -> SseReader:
        for _ in self.iterate(response):
            pass
        return self

    @property
    def names(self) -> list[str | None]:
        return [m.event for m in self.messages]

    @property
    def text(self) -> str:
        return "".join(m.data["chunk_data"]["text"] for m in self.messages if m.event == "text")

    def only(self, name: str) -> Any:
        found = self.all(name)
        assert len(found) == 1, f"expected one {name!r} event, got {self.names}"
        return found[0]

    @property
    def last_line(self) -> str:
        return [line for line in self.lines if line != ""][-1]

    def all(self, name: str) -> list[Any]:
        return [m.data for m in self.messages if m.event == name]

    @property
    def tts_chunks(self) -> list[dict[str, Any]]:
        return [data["tts_chunk"] for data in self.all("tts_chunk")]


# ----- requests -------------------------------------------------------------------------------------
def init(client: httpx.Client, **overrides) -> dict:
    response = client.post("/omni/init_sys_prompt", json={**GREEDY, **overrides})
    assert response.status_code == 200, response.text
    return response.json()


def prefill(client: httpx.Client, text: str) -> dict:
    response = client.post("/omni/streaming_prefill", json={"text": text, "idx": 0})
    assert response.status_code == 200, response.text
    return response.json()


def generate(client: httpx.Client, **body) -> SseReader:
    with client.stream("POST", "/omni/streaming_generate", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return SseReader().read_all(response)


def turn(client: httpx.Client, text: str, max_new_tokens: int = 8) -> SseReader:
    prefill(client, text)
    return generate(client, max_new_tokens=max_new_tokens)


def session_status(client: httpx.Client) -> dict:
    return client.get("/health").json()["session"]


def assert_well_formed(stream: SseReader, reason: str) -> None:
    """(text|tts_chunk|audio)* -> stats -> done, then `data: [DONE]` as the very last line; tts_chunk events
    count from 0 and the stats' speech_tokens is the sum of their speech tokens."""
    letters = {"text": "t", "tts_chunk": "c", "audio": "a", "stats": "s", "done": "d", None: "D"}
    names = "".join(letters.get(n, "?") for n in stream.names)
    assert re.fullmatch("[tca]*sdD", names), stream.names
    assert stream.messages[-1].data == "[DONE]"
    assert stream.last_line == "data: [DONE]"
    stats = stream.only("stats")["stats"]
    done = stream.only("done")
    assert done == {"done": True, "reason": reason, "turn": stats["turn"]}
    chunks = stream.tts_chunks
    assert [chunk["chunk_idx"] for chunk in chunks] == list(range(len(chunks)))
    assert stats["speech_tokens"] == sum(chunk["n_speech_tokens"] for chunk in chunks)


def assert_error(
    response: httpx.Response, status: int, message: str, prefix_endings: tuple[str, ...] = ("(",)
) -> None:
    """The response is `status` with error `message`; a message ending in one of `prefix_endings` is only the
    start of the error (the rest is a decoder's own wording)."""
    assert response.status_code == status
    error = response.json()["error"]
    assert error.startswith(message) if message.endswith(prefix_endings) else error == message


def assert_usable(client: httpx.Client) -> None:
    stream = turn(client, "still there?", max_new_tokens=3)
    assert_well_formed(stream, "max_tokens")

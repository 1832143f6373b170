"""Fixtures for the API tests: the real server with the real engine on the tiny model directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_helpers import ServerProcess, start_server, stop_server


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server(tiny_model_dir, log_path, "--max-body-mb", "1", "--threads", "2")
    yield running
    stop_server(running)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too
    assert running.process.returncode in (0, -15), running.log_text()
    assert "Application shutdown complete." in running.log_text()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http

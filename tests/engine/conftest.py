"""Engine fixtures (the tiny model directory comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_support import N_GPU_LAYERS, EventLog, make_engine

import omni_engine as oe


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[oe.Engine]:
    eng = make_engine(tiny_model_dir)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def llm(tiny_llm_path: Path) -> oe.Llm:
    return oe.Llm(str(tiny_llm_path), n_ctx=2048, n_gpu_layers=N_GPU_LAYERS)


@pytest.fixture
def log() -> EventLog:
    return EventLog()

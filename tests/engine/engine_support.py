"""Helpers shared by the engine tests. OMNI_TEST_N_GPU_LAYERS=-1 runs them with every layer on the GPU."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import omni_engine as oe

N_GPU_LAYERS = int(os.environ.get("OMNI_TEST_N_GPU_LAYERS", "0"))
GREEDY = oe.SamplingParams(temperature=0.0, seed=1)


class EventLog:
    """Collects engine events; `first_text` is set when the first text event arrives, and `first_audio`
    when the first audio event does."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.first_text = threading.Event()
        self.first_audio = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        with self._lock:
            self.events.append(event)
        if event["type"] == "text":
            self.first_text.set()
        elif event["type"] == "audio":
            self.first_audio.set()

    def of_turn(self, turn: int) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["turn"] == turn]

    def text(self, turn: int) -> str:
        return "".join(e["text"] for e in self.of_turn(turn) if e["type"] == "text")

    def end(self, turn: int) -> dict:
        ends = [e for e in self.of_turn(turn) if e["type"] == "end_of_turn"]
        assert len(ends) == 1, f"turn {turn} has {len(ends)} end_of_turn events"
        return ends[0]

    def stats(self, turn: int) -> dict:
        stats = [e for e in self.of_turn(turn) if e["type"] == "stats"]
        assert len(stats) == 1, f"turn {turn} has {len(stats)} stats events"
        return stats[0]


def make_engine(model_dir: Path, n_ctx: int = 2048) -> oe.Engine:
    return oe.Engine(
        oe.EngineOptions(model_dir=str(model_dir), n_ctx=n_ctx, n_gpu_layers=N_GPU_LAYERS, n_threads=2)
    )

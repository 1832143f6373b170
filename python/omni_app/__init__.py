"""omni-app: a local voice/vision assistant for MiniCPM-o 4.5 GGUF.

The C++ extension ``omni_engine`` runs the model; this package is the app around it: the FastAPI server
(``python -m omni_app serve``), the CLI, and a small library API for scripts and notebooks::

    from omni_app import Assistant

    with Assistant("models/MiniCPM-o-4_5-gguf", temperature=0) as bot:
        print(bot.chat("Hello!"))
        for event in bot.stream("Tell me more."):   # engine event dicts: text, stats, ..., end_of_turn
            ...

For asyncio code, :class:`OmniEngine` is the adapter the server uses.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# The engine's stages compute on their own threads at the same time, each through OpenMP. OpenMP's default
# lets idle worker threads spin, and spinning workers of one stage starve the others (a TTS step measured
# 36 ms instead of 0.9 ms next to a busy stage on 2 cores). Workers that sleep when idle cost a few
# microseconds per graph instead. libgomp reads this once, when the extension loads it: set it before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from omni_app.engine import (  # noqa: E402  (re-exported library API; __version__ first for submodules)
    Assistant,
    BusyError,
    ContextFullError,
    EngineConfig,
    EngineUnavailableError,
    FeatureUnavailableError,
    ModelLoadError,
    NoSessionError,
    NotInitializedError,
    OmniAppError,
    OmniEngine,
    SessionConfig,
    TurnStream,
)

__all__ = [
    "Assistant",
    "BusyError",
    "ContextFullError",
    "EngineConfig",
    "EngineUnavailableError",
    "FeatureUnavailableError",
    "ModelLoadError",
    "NoSessionError",
    "NotInitializedError",
    "OmniAppError",
    "OmniEngine",
    "SessionConfig",
    "TurnStream",
    "__version__",
]

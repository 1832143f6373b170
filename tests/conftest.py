"""Shared fixtures: tiny random-weight model directories, generated once per test session.

- `tiny_model_dir` / `tiny_llm_path`: the release-policy directory (F16 matrices, seed 0), ~80 MB.
- `tiny_llm_f32_path`: the F32 variant (seed 0), ~160 MB, only generated when a test asks for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test helper modules at tests/ (hf_reference.py) importable whatever the import mode / package layout.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from omni_app.tiny_models import write_tiny_model_dir  # noqa: E402
from omni_app.tiny_models.llm import llm_file_name  # noqa: E402

TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("tiny_models")
    write_tiny_model_dir(out_dir, seed=TINY_SEED, dtype="f16")
    return out_dir


@pytest.fixture(scope="session")
def tiny_llm_path(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / llm_file_name("f16")


@pytest.fixture(scope="session")
def tiny_model_dir_f32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("tiny_models_f32")
    write_tiny_model_dir(out_dir, seed=TINY_SEED, dtype="f32")
    return out_dir


@pytest.fixture(scope="session")
def tiny_llm_f32_path(tiny_model_dir_f32: Path) -> Path:
    return tiny_model_dir_f32 / llm_file_name("f32")

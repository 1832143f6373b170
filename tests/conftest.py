"""Shared fixtures: tiny random-weight model directories, generated once per test session.

- `tiny_model_dir` / `tiny_llm_path`: the release-policy directory (F16 matrices, seed 0), ~80 MB.
- `tiny_llm_f32_path`: the F32 variant (seed 0), ~160 MB, only generated when a test asks for it.
"""

from __future__ import annotations

import os
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


SPEECH_TEXTS = {
    "en": ("en", "Hello, how are you today? Please tell me about the weather in Paris."),
    "zh": ("cmn", "你好，今天天气怎么样？请介绍一下北京。"),
}


@pytest.fixture(scope="session")
def espeak_speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Speech made with espeak-ng at test time (issue 3's test data): {"en": wav, "zh": wav}, 22.05 kHz."""
    import shutil
    import subprocess

    made_elsewhere = os.environ.get("OMNI_TEST_SPEECH_DIR")
    if made_elsewhere:  # machines without espeak-ng (the GPU machine): the same files, made beforehand
        return {name: Path(made_elsewhere) / f"{name}.wav" for name in SPEECH_TEXTS}
    if shutil.which("espeak-ng") is None:
        pytest.fail("the speech test data needs espeak-ng: apt-get install espeak-ng (.ci/run installs it)")
    out_dir = tmp_path_factory.mktemp("speech")
    files = {}
    for name, (voice, text) in SPEECH_TEXTS.items():
        path = out_dir / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        files[name] = path
    return files

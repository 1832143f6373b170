"""Runs only where the engine was built with CUDA and a GPU is present (through the device tool); the whole
CPU suite is run there too with OMNI_TEST_N_GPU_LAYERS=-1 (README, "CUDA")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import omni_engine as oe

pytestmark = pytest.mark.skipif(
    not (oe.system_info()["cuda"] and oe.system_info()["has_gpu"]),
    reason="needs an engine built with CUDA (OMNI_CUDA=1) and an NVIDIA GPU",
)


def test_layers_run_on_the_gpu(tiny_model_dir: Path) -> None:
    with oe.Engine(oe.EngineOptions(model_dir=str(tiny_model_dir), n_ctx=512, n_gpu_layers=-1)) as eng:
        assert eng.info["backend"].startswith("CUDA")


def test_gpu_logits_match_cpu(tiny_llm_path: Path) -> None:
    tokens = list(range(1000, 1040)) + [151644, 151645, 151703]
    cpu_logits, cpu_hidden = oe.Llm(str(tiny_llm_path), n_gpu_layers=0).eval_all(tokens)
    gpu_logits, gpu_hidden = oe.Llm(str(tiny_llm_path), n_gpu_layers=-1).eval_all(tokens)
    rel_logits = np.linalg.norm(gpu_logits - cpu_logits, axis=1) / np.linalg.norm(cpu_logits, axis=1)
    rel_hidden = np.linalg.norm(gpu_hidden - cpu_hidden, axis=1) / np.linalg.norm(cpu_hidden, axis=1)
    assert rel_logits.max() < 1e-3, rel_logits.max()
    assert rel_hidden.max() < 1e-3, rel_hidden.max()

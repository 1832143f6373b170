"""Missing or malformed model files raise ModelFileError naming the file and what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

import omni_engine as oe
from omni_app.tiny_models.gguf_io import write_tensors_and_close


def open_engine(model_dir: Path) -> oe.Engine:
    return oe.Engine(oe.EngineOptions(model_dir=str(model_dir), n_ctx=256, n_gpu_layers=0))


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(oe.ModelFileError, match=f"model directory not found: {missing}"):
        open_engine(missing)


def test_directory_without_llm_file(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    with pytest.raises(oe.ModelFileError, match=r"no LLM file \(MiniCPM-o-4_5-<quant>.gguf\)"):
        open_engine(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all", b"GGUF\x03\x00\x00\x00truncated"])
def test_garbage_llm_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "MiniCPM-o-4_5-Q4_K_M.gguf"
    bad.write_bytes(content)
    with pytest.raises(oe.ModelFileError, match=f"not a valid GGUF file.*{bad.name}"):
        open_engine(tmp_path)


def test_truncated_copy_of_the_real_layout(tmp_path: Path, tiny_llm_path: Path) -> None:
    cut = tmp_path / "MiniCPM-o-4_5-F16.gguf"
    data = tiny_llm_path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(oe.ModelFileError, match=cut.name):
        open_engine(tmp_path)


def write_small_gguf(path: Path, arch: str, with_tokens: bool) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_uint32(f"{arch}.block_count", 1)
    writer.add_uint32(f"{arch}.embedding_length", 8)
    writer.add_uint32(f"{arch}.attention.head_count", 1)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    if with_tokens:
        writer.add_array("tokenizer.ggml.tokens", ["a", "b"])
    write_tensors_and_close(writer, {"token_embd.weight": np.zeros((2, 8), dtype=np.float32)})


def test_wrong_architecture_is_named(tmp_path: Path) -> None:
    path = tmp_path / "MiniCPM-o-4_5-F16.gguf"
    write_small_gguf(path, "llama", with_tokens=True)
    with pytest.raises(oe.ModelFileError, match=r"general.architecture is 'llama', expected 'qwen3'"):
        open_engine(tmp_path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    path = tmp_path / "MiniCPM-o-4_5-F16.gguf"
    write_small_gguf(path, "qwen3", with_tokens=True)
    with pytest.raises(oe.ModelFileError, match=rf"{path.name}: missing tensor 'output_norm.weight'"):
        open_engine(tmp_path)


def test_llm_preference_q4km_over_f16(tmp_path: Path, tiny_llm_path: Path) -> None:
    shutil.copy(tiny_llm_path, tmp_path / "MiniCPM-o-4_5-F16.gguf")
    (tmp_path / "MiniCPM-o-4_5-Q4_K_M.gguf").write_bytes(b"broken on purpose")
    # The preferred quantisation is chosen, so its error surfaces (instead of silently using F16).
    with pytest.raises(oe.ModelFileError, match="Q4_K_M"):
        open_engine(tmp_path)


def test_small_context_with_a_long_prefill_raises_instead_of_aborting(tiny_model_dir: Path) -> None:
    # llama.cpp caps n_batch at n_ctx; batches larger than that used to abort the process.
    eng = oe.Engine(oe.EngineOptions(model_dir=str(tiny_model_dir), n_ctx=96, n_batch=512, n_gpu_layers=0))
    eng.start_session(oe.SessionOptions(language="en", media_type="omni"), lambda event: None)
    eng.prefill_text("x " * 40)
    with pytest.raises(oe.ContextFullError):
        eng.prefill_text("word " * 200)
    eng.close()

"""Model-directory discovery and validation (omni_app.config)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from omni_app.config import (
    ENV_MODEL_DIR,
    FILE_SPECS,
    ModelDir,
    check_models_report_text,
    find_llm_file,
    is_tiny_demo,
    read_gguf_header,
    resolve_model_dir,
    validate_model_dir,
)

OFFICIAL_LABELS = [
    "MiniCPM-o-4_5-F16.gguf",
    "vision/MiniCPM-o-4_5-vision-F16.gguf",
    "audio/MiniCPM-o-4_5-audio-F16.gguf",
    "tts/MiniCPM-o-4_5-tts-F16.gguf",
    "tts/MiniCPM-o-4_5-projector-F16.gguf",
    "token2wav-gguf/encoder.gguf",
    "token2wav-gguf/flow_matching.gguf",
    "token2wav-gguf/flow_extra.gguf",
    "token2wav-gguf/hifigan2.gguf",
    "token2wav-gguf/prompt_cache.gguf",
]


def _touch(directory: Path, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def _small_qwen3(path: Path, block_count_type: gguf.GGUFValueType = gguf.GGUFValueType.UINT32) -> Path:
    """A few-KB qwen3 GGUF with the required keys but no weights (enough for header validation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "qwen3")
    writer.add_key_value("qwen3.block_count", 1, block_count_type)
    for key in ("embedding_length", "feed_forward_length", "attention.head_count", "attention.head_count_kv"):
        writer.add_uint32(f"qwen3.{key}", 32)
    writer.add_float32("qwen3.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b"])
    writer.add_array("tokenizer.ggml.merges", ["a b"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _link_tiny_llm(tiny_llm_path: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / tiny_llm_path.name
    link.symlink_to(tiny_llm_path)
    return link


# ---- find_llm_file -------------------------------------------------------------------------------


def test_find_llm_file_prefers_q4_k_m_then_q8_0_then_f16(tmp_path: Path) -> None:
    _touch(
        tmp_path, "MiniCPM-o-4_5-F16.gguf", "MiniCPM-o-4_5-Q8_0.gguf", "MiniCPM-o-4_5-Q4_K_M.gguf", "a.gguf"
    )
    assert find_llm_file(tmp_path).name == "MiniCPM-o-4_5-Q4_K_M.gguf"
    (tmp_path / "MiniCPM-o-4_5-Q4_K_M.gguf").unlink()
    assert find_llm_file(tmp_path).name == "MiniCPM-o-4_5-Q8_0.gguf"
    (tmp_path / "MiniCPM-o-4_5-Q8_0.gguf").unlink()
    assert find_llm_file(tmp_path).name == "MiniCPM-o-4_5-F16.gguf"


def test_find_llm_file_falls_back_to_any_gguf_but_not_mmproj(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "mmproj-model-f16.gguf",
        "MiniCPM-o-4_5-vision-F16.gguf",
        "zeta.gguf",
        "MiniCPM-o-4_5-Q5_K_M.gguf",
    )
    _touch(tmp_path / "sub", "MiniCPM-o-4_5-Q4_K_M.gguf")
    assert find_llm_file(tmp_path).name == "MiniCPM-o-4_5-Q5_K_M.gguf"


def test_find_llm_file_names_the_directory_when_nothing_fits(tmp_path: Path) -> None:
    _touch(tmp_path, "mmproj-model-f16.gguf", "notes.txt")
    with pytest.raises(
        FileNotFoundError, match=f"no LLM file in {tmp_path}: expected MiniCPM-o-4_5-<quant>.gguf"
    ):
        find_llm_file(tmp_path)


# ---- resolve_model_dir ---------------------------------------------------------------------------


def test_resolve_prefers_cli_then_env_then_default(tmp_path: Path) -> None:
    cli, env_dir, default = tmp_path / "cli", tmp_path / "env", tmp_path / "models"
    for directory in (cli, env_dir, default):
        _touch(directory, "MiniCPM-o-4_5-Q4_K_M.gguf")
    env = {ENV_MODEL_DIR: str(env_dir)}
    assert resolve_model_dir(str(cli), env=env, models_dir=default) == cli
    assert resolve_model_dir(None, env=env, models_dir=default) == env_dir
    assert resolve_model_dir(None, env={}, models_dir=default) == default
    assert resolve_model_dir("", env={ENV_MODEL_DIR: ""}, models_dir=default) == default


def test_resolve_returns_explicit_path_even_without_model(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    assert resolve_model_dir(str(missing), env={}, models_dir=tmp_path) == missing
    assert resolve_model_dir(None, env={ENV_MODEL_DIR: str(missing)}, models_dir=tmp_path) == missing


def test_resolve_looks_one_level_down_and_prefers_real_over_tiny(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _touch(models / "aaa-tiny", "MiniCPM-o-4_5-F16.gguf", "TINY_DEMO_README.txt")
    assert resolve_model_dir(None, env={}, models_dir=models) == models / "aaa-tiny"
    _touch(models / "MiniCPM-o-4_5-gguf", "MiniCPM-o-4_5-Q4_K_M.gguf")
    assert resolve_model_dir(None, env={}, models_dir=models) == models / "MiniCPM-o-4_5-gguf"
    assert resolve_model_dir(str(models), env={}, models_dir=tmp_path / "x") == models / "MiniCPM-o-4_5-gguf"


def test_resolve_default_without_model_is_none(tmp_path: Path) -> None:
    _touch(tmp_path / "models" / "empty", "README.md")
    assert resolve_model_dir(None, env={}, models_dir=tmp_path / "models") is None
    assert resolve_model_dir(None, env={}, models_dir=tmp_path / "absent") is None


# ---- layout --------------------------------------------------------------------------------------


def test_model_dir_locates_every_official_file(tmp_path: Path) -> None:
    for label in OFFICIAL_LABELS:
        (tmp_path / label).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / label).write_bytes(b"")
    located = ModelDir.locate(tmp_path)
    assert [getattr(located, spec.attr) for spec in FILE_SPECS] == [
        tmp_path / label for label in OFFICIAL_LABELS
    ]
    assert ModelDir.locate(tmp_path / "nothing-here") == ModelDir(root=tmp_path / "nothing-here")


# ---- validate_model_dir --------------------------------------------------------------------------


def test_tiny_dir_validates_with_every_stage(tiny_model_dir: Path) -> None:
    report = validate_model_dir(tiny_model_dir)
    assert report.ok and report.tiny_demo and report.error is None
    assert report.stages == {"llm": True, "vision": True, "audio": True, "tts": True, "token2wav": True}
    assert [(f.label, f.status, f.message) for f in report.files] == [
        (label, "present", "") for label in OFFICIAL_LABELS
    ]
    text = check_models_report_text(report)
    assert "tiny random-weight demo" in text
    assert "[ok     ] vision/MiniCPM-o-4_5-vision-F16.gguf" in text
    assert "[ok     ] token2wav-gguf/hifigan2.gguf" in text
    assert "Stages unavailable" not in text
    assert "Stages available: llm, vision, audio, tts, token2wav\n" in text and text.endswith(
        "Result: OK (the LLM loads; missing optional stages are disabled)"
    )


def test_missing_llm_is_reported_by_name(tmp_path: Path) -> None:
    _touch(tmp_path / "vision", "MiniCPM-o-4_5-vision-F16.gguf")
    report = validate_model_dir(tmp_path)
    assert not report.ok and not report.tiny_demo
    llm = report.status_of("llm")
    assert (llm.label, llm.status) == ("MiniCPM-o-4_5-<quant>.gguf", "missing")
    assert f"no LLM file in {tmp_path}" in llm.message
    assert report.status_of("vision").status == "invalid"
    text = check_models_report_text(report)
    assert "Result: NOT USABLE" in text and f"  - no LLM file in {tmp_path}" in text


def test_nonexistent_directory(tmp_path: Path) -> None:
    report = validate_model_dir(tmp_path / "nope")
    assert not report.ok
    assert report.error == f"model directory {tmp_path / 'nope'} does not exist"
    assert f"ERROR: model directory {tmp_path / 'nope'} does not exist" in check_models_report_text(report)


def test_garbage_llm_file_is_invalid_with_file_name(tmp_path: Path) -> None:
    (tmp_path / "MiniCPM-o-4_5-Q4_K_M.gguf").write_bytes(b"PK\x03\x04" + bytes(200))
    report = validate_model_dir(tmp_path)
    llm = report.status_of("llm")
    assert llm.status == "invalid" and not report.ok
    assert llm.message == "MiniCPM-o-4_5-Q4_K_M.gguf: not a GGUF file (starts with b'PK\\x03\\x04')"
    assert "[INVALID] MiniCPM-o-4_5-Q4_K_M.gguf" in check_models_report_text(report)


def test_truncated_llm_header_and_data_are_invalid(tiny_llm_path: Path, tmp_path: Path) -> None:
    content = tiny_llm_path.read_bytes()
    target = tmp_path / "MiniCPM-o-4_5-F16.gguf"
    target.write_bytes(content[:100_000])
    message = validate_model_dir(tmp_path).status_of("llm").message
    assert message.startswith("MiniCPM-o-4_5-F16.gguf: truncated GGUF header")
    target.write_bytes(content[: len(content) - 1000])
    message = validate_model_dir(tmp_path).status_of("llm").message
    assert message.startswith(
        "MiniCPM-o-4_5-F16.gguf: truncated: tensor 'blk.1.ffn_down.weight' ends at byte"
    )


def test_wrong_architecture_key_type_and_missing_tensor(tmp_path: Path) -> None:
    llm = _small_qwen3(tmp_path / "MiniCPM-o-4_5-F16.gguf")
    assert validate_model_dir(tmp_path).status_of("llm").message == (
        "MiniCPM-o-4_5-F16.gguf: required tensor 'output_norm.weight' is missing"
    )
    _small_qwen3(llm, block_count_type=gguf.GGUFValueType.INT32)
    assert validate_model_dir(tmp_path).status_of("llm").message == (
        "MiniCPM-o-4_5-F16.gguf: key 'qwen3.block_count' has type INT32, expected UINT32"
    )
    writer = gguf.GGUFWriter(llm, "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert validate_model_dir(tmp_path).status_of("llm").message == (
        "MiniCPM-o-4_5-F16.gguf: general.architecture is 'llama', expected 'qwen3'"
    )


def test_invalid_optional_file_disables_only_its_stage(tiny_llm_path: Path, tmp_path: Path) -> None:
    _link_tiny_llm(tiny_llm_path, tmp_path)
    _small_qwen3(tmp_path / "audio" / "MiniCPM-o-4_5-audio-F16.gguf")
    report = validate_model_dir(tmp_path)
    assert report.ok and report.stages["llm"] and not report.stages["audio"]
    assert report.status_of("audio").message == (
        "audio/MiniCPM-o-4_5-audio-F16.gguf: general.architecture is 'qwen3', expected 'whisper'"
    )
    assert report.problems == [report.status_of("audio").message]


# ---- tiny marker ---------------------------------------------------------------------------------


def test_tiny_marker_detection(tiny_model_dir: Path, tiny_llm_path: Path, tmp_path: Path) -> None:
    assert is_tiny_demo(tiny_model_dir)
    by_metadata = tmp_path / "metadata-only"
    _link_tiny_llm(tiny_llm_path, by_metadata)  # no README: the GGUF key omni_app.tiny_demo decides
    assert is_tiny_demo(by_metadata)
    plain = tmp_path / "plain"
    _small_qwen3(plain / "MiniCPM-o-4_5-Q4_K_M.gguf")
    assert not is_tiny_demo(plain)
    assert not is_tiny_demo(tmp_path / "absent")


def test_header_reader_reads_typed_fields(tiny_llm_path: Path) -> None:
    header = read_gguf_header(tiny_llm_path)
    assert header.value("general.architecture") == "qwen3"
    assert header.fields["tokenizer.ggml.token_type"].value[151667] == 4
    assert header.tensors["output.weight"].ne == (128, 151748)
    assert header.tensors["output.weight"].nbytes == 128 * 151748 * 2

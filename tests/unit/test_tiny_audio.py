"""The tiny audio encoder GGUF (model-files.md §5.2/§5.3, tiny dims of §9.2/§9.3): keys with exact types and
values, the real mel filterbank bit for bit, every tensor's name/ne/dtype, F16 precision of the F32 values,
determinism; and the validation of the audio file in omni_app.config (messages name the file and the key or
tensor at fault)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import librosa
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_files import sha256_of as _sha256
from gguf_files import tensor_values as _tensor

from omni_app.config import GgufHeader, read_gguf_header, validate_model_dir
from omni_app.tiny_models import write_tiny_model_dir
from omni_app.tiny_models.audio import FULL_AUDIO_DIMS, random_weights, tensor_shapes
from omni_app.tiny_models.gguf_io import write_tensors_and_close

AUDIO = "audio/MiniCPM-o-4_5-audio-F16.gguf"
U32, STR, BOOL = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.BOOL
F16, F32 = GGMLQuantizationType.F16, GGMLQuantizationType.F32

EXPECTED_SCALARS = {
    "general.architecture": (STR, "whisper"),
    "general.file_type": (U32, 1),
    "general.description": (STR, "audio encoder for MiniCPM-omni (omni_app tiny random-weight stand-in)"),
    "omni_app.tiny_demo": (BOOL, True),
    "encoder_attention_heads": (U32, 4),
    "encoder_ffn_dim": (U32, 256),
    "encoder_layers": (U32, 2),
    "num_hidden_layers": (U32, 2),
    "d_model": (U32, 64),
    "audio_pool_step": (U32, 5),
    "use_f16": (U32, 1),
    "n_mel": (U32, 80),
    "n_fft": (U32, 201),
}

# model-files.md §9.3 "Audio", written out (GGUF ne order).
EXPECTED_TENSORS = {
    "encoder.conv1.weight": ((3, 80, 64), F16),
    "encoder.conv1.bias": ((1, 64), F32),
    "encoder.conv2.weight": ((3, 64, 64), F16),
    "encoder.conv2.bias": ((1, 64), F32),
    "encoder.positional_embedding": ((64, 1500), F32),
    "encoder.ln_post.weight": ((64,), F32),
    "encoder.ln_post.bias": ((64,), F32),
    "audio_projector.linear1.weight": ((64, 128), F16),
    "audio_projector.linear1.bias": ((128,), F32),
    "audio_projector.linear2.weight": ((128, 128), F16),
    "audio_projector.linear2.bias": ((128,), F32),
}
for _i in range(2):
    EXPECTED_TENSORS |= {
        f"encoder.blocks.{_i}.attn_ln.weight": ((64,), F32),
        f"encoder.blocks.{_i}.attn_ln.bias": ((64,), F32),
        f"encoder.blocks.{_i}.attn.query.weight": ((64, 64), F16),
        f"encoder.blocks.{_i}.attn.query.bias": ((64,), F32),
        f"encoder.blocks.{_i}.attn.key.weight": ((64, 64), F16),
        f"encoder.blocks.{_i}.attn.value.weight": ((64, 64), F16),
        f"encoder.blocks.{_i}.attn.value.bias": ((64,), F32),
        f"encoder.blocks.{_i}.attn.out.weight": ((64, 64), F16),
        f"encoder.blocks.{_i}.attn.out.bias": ((64,), F32),
        f"encoder.blocks.{_i}.mlp_ln.weight": ((64,), F32),
        f"encoder.blocks.{_i}.mlp_ln.bias": ((64,), F32),
        f"encoder.blocks.{_i}.mlp.0.weight": ((64, 256), F16),
        f"encoder.blocks.{_i}.mlp.0.bias": ((256,), F32),
        f"encoder.blocks.{_i}.mlp.2.weight": ((256, 64), F16),
        f"encoder.blocks.{_i}.mlp.2.bias": ((64,), F32),
    }


@pytest.fixture(scope="module")
def audio_path(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / AUDIO


@pytest.fixture(scope="module")
def header(audio_path: Path) -> GgufHeader:
    return read_gguf_header(audio_path)


# ---- keys -----------------------------------------------------------------------------------------


def test_keys_have_exact_types_and_values(header: GgufHeader) -> None:
    assert set(header.fields) == set(EXPECTED_SCALARS) | {"filters"}
    for key, (expected_type, expected_value) in EXPECTED_SCALARS.items():
        assert (key, header.fields[key].type, header.fields[key].value) == (
            key,
            expected_type,
            expected_value,
        )
    assert header.version == 3


def test_filters_are_librosa_slaney_bank_bit_for_bit(header: GgufHeader) -> None:
    filters = header.fields["filters"]
    assert (filters.type, filters.item_type, len(filters.value)) == (
        GGUFValueType.ARRAY,
        GGUFValueType.FLOAT32,
        80 * 201,
    )
    stored = np.asarray(filters.value, dtype=np.float32).reshape(80, 201)  # row-major [mel][bin]
    expected = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    assert expected.dtype == np.float32
    np.testing.assert_array_equal(stored.view(np.uint32), expected.view(np.uint32))
    # Slaney bank shape: every filter non-negative with one peak; bin 200 (8 kHz) belongs to no filter.
    assert stored.min() == 0.0 and (stored.max(axis=1) > 0).all() and stored[:, 200].max() == 0.0


# ---- tensors --------------------------------------------------------------------------------------


def test_tensor_names_ne_and_dtypes(header: GgufHeader) -> None:
    found = {name: (info.ne, info.ggml_type) for name, info in header.tensors.items()}
    assert found == EXPECTED_TENSORS
    assert len(found) == 41
    assert not any(name.endswith("attn.key.bias") for name in found)
    assert all(info.offset % 32 == 0 for info in header.tensors.values())


def test_full_size_layout_has_371_tensors_of_section_5_3() -> None:
    shapes = {name: tuple(reversed(shape)) for name, (shape, _) in tensor_shapes(FULL_AUDIO_DIMS).items()}
    assert len(shapes) == 371
    assert shapes["encoder.conv1.weight"] == (3, 80, 1024)
    assert shapes["encoder.conv2.bias"] == (1, 1024)
    assert shapes["encoder.positional_embedding"] == (1024, 1500)
    assert shapes["encoder.blocks.23.mlp.0.weight"] == (1024, 4096)
    assert shapes["audio_projector.linear2.weight"] == (4096, 4096)


def test_f32_values_carry_f16_precision(header: GgufHeader) -> None:
    f32_names = [name for name, info in header.tensors.items() if info.ggml_type == F32]
    assert len(f32_names) == 25  # 3 + 9 per layer + ln_post + 2 projector biases
    for name in f32_names:
        values = _tensor(header, name)
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values.astype(np.float16).astype(np.float32), values, err_msg=name)


def test_weight_statistics(header: GgufHeader) -> None:
    matrices = np.concatenate(
        [
            _tensor(header, n).astype(np.float32).ravel()
            for n, i in header.tensors.items()
            if i.ggml_type == F16
        ]
    )
    assert abs(float(matrices.std()) - 0.05) < 2e-3 and abs(float(matrices.mean())) < 2e-3
    norms = np.concatenate([_tensor(header, n) for n in header.tensors if n.endswith("ln.weight")])
    assert abs(float(norms.mean()) - 1.0) < 0.02 and 0.02 < float(norms.std()) < 0.1
    biases = np.concatenate([_tensor(header, n).ravel() for n in header.tensors if n.endswith(".bias")])
    assert float(np.abs(biases).max()) < 0.15
    positions = _tensor(header, "encoder.positional_embedding")
    assert positions.shape == (1500, 64) and abs(float(positions.std()) - 0.5) < 0.01


# ---- determinism ----------------------------------------------------------------------------------


def test_same_seed_is_byte_identical(audio_path: Path, tmp_path: Path) -> None:
    summary = write_tiny_model_dir(tmp_path, seed=0)
    assert summary["files"][AUDIO] == audio_path.stat().st_size
    assert _sha256(tmp_path / AUDIO) == _sha256(audio_path)


def test_other_seed_changes_weights_only(header: GgufHeader) -> None:
    other, base = random_weights(seed=1), random_weights(seed=0)
    assert list(other) == list(header.tensors)
    for name, array in base.items():
        np.testing.assert_array_equal(array, _tensor(header, name), err_msg=name)
        assert not np.array_equal(array, other[name]), name


def test_f32_variant_has_same_values_in_f32(header: GgufHeader, tiny_model_dir_f32: Path) -> None:
    f32 = read_gguf_header(tiny_model_dir_f32 / AUDIO)
    assert (f32.value("general.file_type"), f32.value("use_f16")) == (0, 0)
    assert {info.ggml_type for info in f32.tensors.values()} == {F32}
    assert [(n, i.ne) for n, i in f32.tensors.items()] == [(n, i.ne) for n, i in header.tensors.items()]
    for name in header.tensors:
        np.testing.assert_array_equal(
            _tensor(f32, name), _tensor(header, name).astype(np.float32), err_msg=name
        )
    assert validate_model_dir(tiny_model_dir_f32).stages["audio"]


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported audio dtype 'q8'"):
        random_weights(seed=0, dtype="q8")


# ---- validation (omni_app.config) -----------------------------------------------------------------


def _keys() -> dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]]:
    filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).ravel().tolist()
    keys: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] = {
        key: (value, value_type, None)
        for key, (value_type, value) in EXPECTED_SCALARS.items()
        if key != "general.architecture"
    }
    keys["filters"] = (filters, GGUFValueType.ARRAY, GGUFValueType.FLOAT32)
    return keys


def _write_variant(
    model_dir: Path,
    edit_keys: Callable[[dict], None] = lambda keys: None,
    edit_tensors: Callable[[dict], None] = lambda tensors: None,
) -> str:
    """Write an audio file built like the tiny one with edited keys/tensors; return its validation message."""
    keys, tensors = _keys(), random_weights(seed=0)
    edit_keys(keys)
    edit_tensors(tensors)
    path = model_dir / AUDIO
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "whisper")
    for key, (value, value_type, item_type) in keys.items():
        writer.add_key_value(key, value, value_type, item_type)
    write_tensors_and_close(writer, tensors)
    report = validate_model_dir(model_dir)
    assert report.stages["audio"] == (report.status_of("audio").message == "")
    return report.status_of("audio").message


def test_tiny_audio_file_makes_the_audio_stage_available(tiny_model_dir: Path, tmp_path: Path) -> None:
    report = validate_model_dir(tiny_model_dir)
    assert report.stages["audio"] and report.status_of("audio").status == "present"
    assert _write_variant(tmp_path) == ""


I32, ARR, KF32 = GGUFValueType.INT32, GGUFValueType.ARRAY, GGUFValueType.FLOAT32


@pytest.mark.parametrize(
    ("key", "replacement", "problem"),
    [
        ("d_model", None, "required key 'd_model' is missing"),
        ("filters", None, "required key 'filters' is missing"),
        ("d_model", (64, I32, None), "key 'd_model' has type INT32, expected UINT32"),
        ("n_fft", (201, I32, None), "key 'n_fft' has type INT32, expected UINT32"),
        ("n_fft", (400, U32, None), "key 'n_fft' is 400, expected 201 (STFT bins of a 400-point FFT)"),
        (
            "encoder_attention_heads",
            (3, U32, None),
            "key 'd_model' (64) is not a multiple of key 'encoder_attention_heads' (3)",
        ),
        ("encoder_layers", (0, U32, None), "key 'encoder_layers' is 0 (the file has 41 tensors)"),
        (
            "filters",
            ([0.5] * 100, ARR, KF32),
            "key 'filters' holds 100 FLOAT32 values, expected 16080 FLOAT32 values (n_mel x n_fft)",
        ),
        (
            "filters",
            ([1] * 16080, ARR, I32),
            "key 'filters' holds 16080 INT32 values, expected 16080 FLOAT32 values (n_mel x n_fft)",
        ),
        ("encoder_layers", (3, U32, None), "required tensor 'encoder.blocks.2.attn_ln.weight' is missing"),
    ],
)
def test_key_problems_are_named(tmp_path: Path, key: str, replacement: tuple | None, problem: str) -> None:
    def edit(keys: dict) -> None:
        if replacement is None:
            del keys[key]
        else:
            keys[key] = replacement

    assert _write_variant(tmp_path, edit_keys=edit) == f"{AUDIO}: {problem}"


@pytest.mark.parametrize(
    ("edit_tensors", "problem"),
    [
        (
            lambda t: t.pop("encoder.blocks.1.attn.key.weight"),
            "required tensor 'encoder.blocks.1.attn.key.weight' is missing",
        ),
        (
            lambda t: t.update({"encoder.conv1.bias": t["encoder.conv1.bias"].ravel()}),
            "tensor 'encoder.conv1.bias' has ne (64,), expected (1, 64)",
        ),
        (
            lambda t: t.update({"encoder.blocks.1.mlp.0.weight": np.zeros((128, 64), np.float16)}),
            "tensor 'encoder.blocks.1.mlp.0.weight' has ne (64, 128), expected (64, 256)",
        ),
        (
            lambda t: t.update({"encoder.positional_embedding": np.zeros((1000, 64), np.float32)}),
            "tensor 'encoder.positional_embedding' has 1000 rows, fewer than the 1500 encoder positions",
        ),
        (
            lambda t: t.update({"audio_projector.linear2.weight": np.zeros((128, 96), np.float16)}),
            "tensor 'audio_projector.linear2.weight' has ne (96, 128), expected (128, 128)",
        ),
    ],
)
def test_tensor_problems_are_named(tmp_path: Path, edit_tensors: Callable, problem: str) -> None:
    assert _write_variant(tmp_path, edit_tensors=edit_tensors) == f"{AUDIO}: {problem}"

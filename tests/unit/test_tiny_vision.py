"""The tiny vision GGUF (model-files.md §4.2/§4.3, tiny dims of §9.2/§9.3): keys with exact types, values and
order, every tensor's name/ne/dtype (55 tensors, the ffn_down/ffn_up swap quirk, the F16/F32 rule), the
converter's sin/cos table, determinism; and the validation of the vision file in omni_app.config (messages
name the file and the key or tensor at fault; the resampler width must equal the LLM hidden size)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_files import sha256_of as _sha256
from gguf_files import tensor_values as _tensor

from omni_app import __main__ as cli
from omni_app.config import FILE_SPECS, GgufHeader, check_gguf_file, read_gguf_header, validate_model_dir
from omni_app.tiny_models import write_tiny_model_dir
from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.vision import (
    FULL_VISION_DIMS,
    TINY_VISION_DIMS,
    VisionDims,
    random_weights,
    vision_shapes,
)

VISION = "vision/MiniCPM-o-4_5-vision-F16.gguf"
U32, I32, KF32 = GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32
STR, BOOL, ARR = GGUFValueType.STRING, GGUFValueType.BOOL, GGUFValueType.ARRAY
F16, F32 = GGMLQuantizationType.F16, GGMLQuantizationType.F32

# model-files.md §4.2 in file order with the tiny values of §9.3, plus our demo marker after the description.
EXPECTED_KEYS: list[tuple[str, GGUFValueType, Any]] = [
    ("general.architecture", STR, "clip"),
    ("clip.has_text_encoder", BOOL, False),
    ("clip.has_vision_encoder", BOOL, True),
    ("clip.has_minicpmv_projector", BOOL, True),
    ("general.file_type", U32, 1),
    ("general.description", STR, "image encoder for MiniCPM-V (omni_app tiny random-weight stand-in)"),
    ("omni_app.tiny_demo", BOOL, True),
    ("clip.projector_type", STR, "resampler"),
    ("clip.minicpmv_version", I32, 100045),
    ("clip.vision.image_size", U32, 56),
    ("clip.vision.patch_size", U32, 14),
    ("clip.vision.embedding_length", U32, 32),
    ("clip.vision.feed_forward_length", U32, 64),
    ("clip.vision.projection_dim", U32, 0),
    ("clip.vision.attention.head_count", U32, 2),
    ("clip.vision.attention.layer_norm_epsilon", KF32, pytest.approx(1e-6, rel=1e-6)),
    ("clip.vision.block_count", U32, 2),
    ("clip.minicpmv_query_num", U32, 64),
    ("clip.vision.image_mean", ARR, [0.5, 0.5, 0.5]),
    ("clip.vision.image_std", ARR, [0.5, 0.5, 0.5]),
    ("clip.use_gelu", BOOL, True),
]

# model-files.md §9.3 "Vision", written out (GGUF ne order).
EXPECTED_TENSORS: dict[str, tuple[tuple[int, ...], GGMLQuantizationType]] = {
    "v.patch_embd.weight": ((14, 14, 3, 32), F16),
    "v.patch_embd.bias": ((32,), F32),
    "v.position_embd.weight": ((32, 4900), F16),
    "v.post_ln.weight": ((32,), F32),
    "v.post_ln.bias": ((32,), F32),
    "resampler.query": ((128, 64), F32),
    "resampler.pos_embed_k": ((128, 4900), F32),
    "resampler.proj.weight": ((128, 128), F16),
    "resampler.kv.weight": ((32, 128), F16),
}
for _p in ("q", "k", "v", "out"):
    EXPECTED_TENSORS[f"resampler.attn.{_p}.weight"] = ((128, 128), F16)
    EXPECTED_TENSORS[f"resampler.attn.{_p}.bias"] = ((128,), F32)
for _n in ("ln_q", "ln_kv", "ln_post"):
    EXPECTED_TENSORS[f"resampler.{_n}.weight"] = ((128,), F32)
    EXPECTED_TENSORS[f"resampler.{_n}.bias"] = ((128,), F32)
for _i in range(2):
    for _p in ("attn_q", "attn_k", "attn_v", "attn_out"):
        EXPECTED_TENSORS[f"v.blk.{_i}.{_p}.weight"] = ((32, 32), F16)
        EXPECTED_TENSORS[f"v.blk.{_i}.{_p}.bias"] = ((32,), F32)
    for _n in ("ln1", "ln2"):
        EXPECTED_TENSORS[f"v.blk.{_i}.{_n}.weight"] = ((32,), F32)
        EXPECTED_TENSORS[f"v.blk.{_i}.{_n}.bias"] = ((32,), F32)
    EXPECTED_TENSORS[f"v.blk.{_i}.ffn_down.weight"] = ((32, 64), F16)  # fc1: width 32 -> FFN 64
    EXPECTED_TENSORS[f"v.blk.{_i}.ffn_down.bias"] = ((64,), F32)
    EXPECTED_TENSORS[f"v.blk.{_i}.ffn_up.weight"] = ((64, 32), F16)  # fc2: FFN 64 -> width 32
    EXPECTED_TENSORS[f"v.blk.{_i}.ffn_up.bias"] = ((32,), F32)


@pytest.fixture(scope="module")
def vision_path(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / VISION


@pytest.fixture(scope="module")
def header(vision_path: Path) -> GgufHeader:
    return read_gguf_header(vision_path)


# ---- keys and tensors -----------------------------------------------------------------------------


def test_keys_have_exact_types_values_and_order(header: GgufHeader) -> None:
    found = [(key, field.type, field.value) for key, field in header.fields.items()]
    assert found == EXPECTED_KEYS
    assert header.fields["clip.vision.image_mean"].item_type == KF32
    assert header.fields["clip.vision.image_std"].item_type == KF32
    assert header.version == 3


def test_tensor_names_ne_and_dtypes(header: GgufHeader) -> None:
    found = {name: (info.ne, info.ggml_type) for name, info in header.tensors.items()}
    assert found == EXPECTED_TENSORS
    assert len(found) == 55 == 5 + 16 * 2 + 18
    assert "v.class_embd" not in found
    assert all(info.offset % 32 == 0 for info in header.tensors.values())


def test_ffn_swap_quirk_is_detectable_by_the_loader_rule(header: GgufHeader) -> None:
    """ffn_down holds fc1 (ne0 = width), ffn_up fc2 (ne0 = FFN); the FFN differs from the width."""
    width, n_ff = (
        header.value("clip.vision.embedding_length"),
        header.value("clip.vision.feed_forward_length"),
    )
    assert width != n_ff
    for layer in range(2):
        assert header.tensors[f"v.blk.{layer}.ffn_down.weight"].ne == (width, n_ff)
        assert header.tensors[f"v.blk.{layer}.ffn_down.bias"].ne == (n_ff,)
        assert header.tensors[f"v.blk.{layer}.ffn_up.weight"].ne == (n_ff, width)
        assert header.tensors[f"v.blk.{layer}.ffn_up.bias"].ne == (width,)


def test_full_size_layout_has_455_tensors_of_section_4_3() -> None:
    shapes = {name: tuple(reversed(shape)) for name, (shape, _) in vision_shapes(FULL_VISION_DIMS).items()}
    assert len(shapes) == 455  # 27 layers: 5 + 16 * 27 + 18
    assert shapes["v.patch_embd.weight"] == (14, 14, 3, 1152)
    assert shapes["v.position_embd.weight"] == (1152, 4900)
    assert shapes["v.blk.26.ffn_down.weight"] == (1152, 4304)
    assert shapes["v.blk.26.ffn_up.weight"] == (4304, 1152)
    assert shapes["v.blk.26.ffn_down.bias"] == (4304,)
    assert shapes["resampler.query"] == (4096, 64)
    assert shapes["resampler.pos_embed_k"] == (4096, 4900)
    assert shapes["resampler.kv.weight"] == (1152, 4096)
    assert shapes["resampler.attn.q.weight"] == (4096, 4096)
    assert "v.blk.27.attn_q.weight" not in shapes


# ---- values ---------------------------------------------------------------------------------------


def test_pos_embed_k_is_the_2d_sincos_table(header: GgufHeader) -> None:
    """Row r*70 + c: [sin(c w_k), cos(c w_k)] then [sin(r w_k), cos(r w_k)], w_k = 10000^(-k/32), k < 32."""
    table = _tensor(header, "resampler.pos_embed_k")
    assert table.shape == (4900, 128)
    for row, col in ((0, 0), (3, 5), (69, 1), (40, 69)):
        position = table[row * 70 + col]
        for k in (0, 1, 7, 31):
            omega = 10000.0 ** (-k / 32)
            expected = [
                math.sin(col * omega),
                math.cos(col * omega),
                math.sin(row * omega),
                math.cos(row * omega),
            ]
            found = [position[k], position[32 + k], position[64 + k], position[96 + k]]
            assert found == pytest.approx(expected, abs=1e-6), (row, col, k)
    assert float(np.abs(table).max()) <= 1.0


def test_f32_values_carry_f16_precision_except_the_sincos_table(header: GgufHeader) -> None:
    f32_names = [name for name, info in header.tensors.items() if info.ggml_type == F32]
    assert len(f32_names) == 35  # patch bias, 10 per layer, post_ln 2, query, pos_embed_k, 4 biases, 6 norms
    for name in f32_names:
        values = _tensor(header, name)
        rounded = values.astype(np.float16).astype(np.float32)
        if name == "resampler.pos_embed_k":
            assert not np.array_equal(rounded, values)
        else:
            np.testing.assert_array_equal(rounded, values, err_msg=name)


def test_weight_statistics(header: GgufHeader) -> None:
    matrices = np.concatenate(
        [
            _tensor(header, n).astype(np.float32).ravel()
            for n, i in header.tensors.items()
            if i.ggml_type == F16 and n != "v.position_embd.weight"
        ]
    )
    assert abs(float(matrices.std()) - 0.05) < 2e-3 and abs(float(matrices.mean())) < 2e-3
    norms = np.concatenate(
        [_tensor(header, n) for n in header.tensors if ".ln" in n and n.endswith(".weight")]
    )
    assert abs(float(norms.mean()) - 1.0) < 0.02 and 0.02 < float(norms.std()) < 0.1
    biases = np.concatenate([_tensor(header, n).ravel() for n in header.tensors if n.endswith(".bias")])
    assert abs(float(biases.std()) - 0.05) < 0.01
    positions = _tensor(header, "v.position_embd.weight").astype(np.float32)
    assert positions.shape == (4900, 32) and abs(float(positions.std()) - 0.5) < 0.01


# ---- determinism ----------------------------------------------------------------------------------


def test_same_seed_is_byte_identical(vision_path: Path, tmp_path: Path) -> None:
    summary = write_tiny_model_dir(tmp_path, seed=0)
    assert summary["files"][VISION] == vision_path.stat().st_size
    assert _sha256(tmp_path / VISION) == _sha256(vision_path)


def test_other_seed_changes_random_weights_only(header: GgufHeader) -> None:
    other, base = random_weights(seed=1), random_weights(seed=0)
    assert list(other) == list(header.tensors)
    for name, array in base.items():
        np.testing.assert_array_equal(array, _tensor(header, name), err_msg=name)
        assert np.array_equal(array, other[name]) == (name == "resampler.pos_embed_k"), name


def test_f32_variant_has_same_values_in_f32(header: GgufHeader, tiny_model_dir_f32: Path) -> None:
    f32 = read_gguf_header(tiny_model_dir_f32 / VISION)
    assert f32.value("general.file_type") == 0
    assert {info.ggml_type for info in f32.tensors.values()} == {F32}
    assert [(n, i.ne) for n, i in f32.tensors.items()] == [(n, i.ne) for n, i in header.tensors.items()]
    for name in header.tensors:
        np.testing.assert_array_equal(
            _tensor(f32, name), _tensor(header, name).astype(np.float32), err_msg=name
        )
    assert validate_model_dir(tiny_model_dir_f32).stages["vision"]


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported vision dtype 'q8'"):
        random_weights(seed=0, dtype="q8")


# ---- validation (omni_app.config) -----------------------------------------------------------------


def test_check_models_accepts_the_tiny_directory(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    report = validate_model_dir(tiny_model_dir)
    assert report.stages["vision"] and report.status_of("vision").status == "present"
    assert cli.main(["check-models", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert f"[ok     ] {VISION}" in out
    assert "Stages available: llm, vision, audio, tts, token2wav\n" in out


def _keys() -> dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]]:
    keys: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] = {}
    for key, value_type, value in EXPECTED_KEYS[1:]:  # general.architecture comes from the writer
        item_type = KF32 if value_type == ARR else None
        keys[key] = (1e-6 if value_type == KF32 else value, value_type, item_type)
    return keys


def _write_variant(
    model_dir: Path,
    tiny_llm_path: Path,
    edit_keys: Callable[[dict], None] = lambda keys: None,
    edit_tensors: Callable[[dict], None] = lambda tensors: None,
    dims: VisionDims = TINY_VISION_DIMS,
) -> str:
    """Next to the tiny LLM, write a vision file built like the tiny one with edited keys/tensors; return its
    validation message ("" when valid)."""
    keys, tensors = _keys(), random_weights(seed=0, dims=dims)
    edit_keys(keys)
    edit_tensors(tensors)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / tiny_llm_path.name).symlink_to(tiny_llm_path)
    path = model_dir / VISION
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "clip")
    for key, (value, value_type, item_type) in keys.items():
        writer.add_key_value(key, value, value_type, item_type)
    write_tensors_and_close(writer, tensors)
    report = validate_model_dir(model_dir)
    assert report.ok and report.stages["llm"]
    assert report.stages["vision"] == (report.status_of("vision").message == "")
    return report.status_of("vision").message


def test_unchanged_variant_is_valid(tmp_path: Path, tiny_llm_path: Path) -> None:
    assert _write_variant(tmp_path, tiny_llm_path) == ""


@pytest.mark.parametrize(
    ("key", "replacement", "problem"),
    [
        ("clip.vision.block_count", None, "required key 'clip.vision.block_count' is missing"),
        ("clip.vision.image_std", None, "required key 'clip.vision.image_std' is missing"),
        (
            "clip.vision.block_count",
            (2, I32, None),
            "key 'clip.vision.block_count' has type INT32, expected UINT32",
        ),
        (
            "clip.minicpmv_version",
            (100045, U32, None),
            "key 'clip.minicpmv_version' has type UINT32, expected INT32",
        ),
        (
            "clip.vision.attention.layer_norm_epsilon",
            (1e-6, GGUFValueType.FLOAT64, None),
            "key 'clip.vision.attention.layer_norm_epsilon' has type FLOAT64, expected FLOAT32",
        ),
        ("clip.use_gelu", (1, U32, None), "key 'clip.use_gelu' has type UINT32, expected BOOL"),
        (
            "clip.has_vision_encoder",
            (False, BOOL, None),
            "key 'clip.has_vision_encoder' is false, expected true",
        ),
        (
            "clip.projector_type",
            ("mlp", STR, None),
            "key 'clip.projector_type' is 'mlp', expected 'resampler'",
        ),
        (
            "clip.vision.image_mean",
            ([1, 1, 1], ARR, I32),
            "key 'clip.vision.image_mean' holds 3 INT32 values, expected 3 FLOAT32 values",
        ),
        (
            "clip.vision.attention.head_count",
            (3, U32, None),
            "key 'clip.vision.embedding_length' (32) is not a multiple of key "
            "'clip.vision.attention.head_count' (3)",
        ),
        (
            "clip.vision.image_size",
            (60, U32, None),
            "key 'clip.vision.image_size' (60) is not a multiple of key 'clip.vision.patch_size' (14)",
        ),
        (
            "clip.vision.block_count",
            (0, U32, None),
            "key 'clip.vision.block_count' is 0 (the file has 55 tensors)",
        ),
        ("clip.vision.block_count", (3, U32, None), "required tensor 'v.blk.2.attn_q.weight' is missing"),
        (
            "clip.vision.feed_forward_length",
            (48, U32, None),
            "tensor 'v.blk.0.ffn_down.weight' has ne (32, 64), expected (32, 48)",
        ),
        (
            "clip.minicpmv_query_num",
            (96, U32, None),
            "tensor 'resampler.query' has ne (128, 64), expected (128, 96)",
        ),
    ],
)
def test_key_problems_are_named(
    tmp_path: Path, tiny_llm_path: Path, key: str, replacement: tuple | None, problem: str
) -> None:
    def edit(keys: dict) -> None:
        if replacement is None:
            del keys[key]
        else:
            keys[key] = replacement

    assert _write_variant(tmp_path, tiny_llm_path, edit_keys=edit) == f"{VISION}: {problem}"


def _swap_ffn(tensors: dict, layers: range) -> None:
    """Store fc1/fc2 under upstream's usual names (fc1 in ffn_up) for `layers`."""
    for layer in layers:
        for suffix in (".weight", ".bias"):
            down, up = f"v.blk.{layer}.ffn_down{suffix}", f"v.blk.{layer}.ffn_up{suffix}"
            tensors[down], tensors[up] = tensors[up], tensors[down]


@pytest.mark.parametrize(
    ("edit_tensors", "problem"),
    [
        (lambda t: t.pop("v.blk.1.attn_k.bias"), "required tensor 'v.blk.1.attn_k.bias' is missing"),
        (lambda t: t.pop("resampler.pos_embed_k"), "required tensor 'resampler.pos_embed_k' is missing"),
        (lambda t: t.pop("resampler.query"), "required tensor 'resampler.query' is missing"),
        (
            lambda t: t.update({"v.position_embd.weight": t["v.position_embd.weight"][:4096]}),
            "tensor 'v.position_embd.weight' has ne (32, 4096), expected (32, 4900)",
        ),
        (
            lambda t: t.update({"resampler.kv.weight": t["resampler.kv.weight"].T.copy()}),
            "tensor 'resampler.kv.weight' has ne (128, 32), expected (32, 128)",
        ),
        (
            lambda t: _swap_ffn(t, range(1, 2)),
            "tensor 'v.blk.1.ffn_down.weight' has ne (64, 32), expected (32, 64)",
        ),
        (
            lambda t: t.update({"v.class_embd": np.zeros(32, dtype=np.float32)}),
            "tensor 'v.class_embd' must be absent (the resampler projector has no class token)",
        ),
        (lambda t: _swap_ffn(t, range(2)), ""),  # both loaders detect the orientation from layer 0
    ],
)
def test_tensor_problems_are_named(
    tmp_path: Path, tiny_llm_path: Path, edit_tensors: Callable[[dict], None], problem: str
) -> None:
    message = _write_variant(tmp_path, tiny_llm_path, edit_tensors=edit_tensors)
    assert message == (f"{VISION}: {problem}" if problem else "")


def test_resampler_width_must_equal_the_llm_hidden_size(tmp_path: Path, tiny_llm_path: Path) -> None:
    dims = VisionDims(resampler_width=256)
    message = _write_variant(tmp_path, tiny_llm_path, dims=dims)
    assert message == (
        f"{VISION}: the resampler width (tensor 'resampler.query' ne0) is 256, but the LLM hidden size is "
        f"128 ({tiny_llm_path.name})"
    )


def test_resampler_width_must_be_a_multiple_of_the_head_size(tmp_path: Path, tiny_llm_path: Path) -> None:
    message = _write_variant(tmp_path, tiny_llm_path, dims=VisionDims(resampler_width=96))
    assert message == (
        f"{VISION}: tensor 'resampler.query' has width 96, not a multiple of the resampler head size 128"
    )


def _write_sparse_vision(path: Path, dims: VisionDims) -> None:
    """The full-size file's header with the real tensor table; the data region is a hole (no disk use)."""
    writer = gguf.GGUFWriter(path, "clip")
    for key, (value, value_type, item_type) in _keys().items():
        writer.add_key_value(key, value, value_type, item_type)
    overrides = {
        "clip.vision.image_size": dims.image_size,
        "clip.vision.embedding_length": dims.width,
        "clip.vision.feed_forward_length": dims.n_ff,
        "clip.vision.attention.head_count": dims.n_head,
        "clip.vision.block_count": dims.n_layer,
    }
    for key, value in overrides.items():
        writer.add_key_value(key, value, U32)
    data_bytes = 0
    for name, (shape, _) in vision_shapes(dims).items():
        dtype = (
            np.float16 if len(shape) == 4 or (len(shape) == 2 and name.endswith(".weight")) else np.float32
        )
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
        data_bytes += -(-nbytes // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    data_start = -(-path.stat().st_size // 32) * 32
    with open(path, "r+b") as handle:
        handle.truncate(data_start + data_bytes)


def test_full_size_dims_validate_without_writing_the_weights(tmp_path: Path) -> None:
    path = tmp_path / "vision.gguf"
    _write_sparse_vision(path, FULL_VISION_DIMS)
    header = read_gguf_header(path)
    assert len(header.tensors) == 455 and header.file_size > 0.9e9
    assert header.value("clip.vision.block_count") == 27
    spec = next(spec for spec in FILE_SPECS if spec.attr == "vision")
    assert check_gguf_file(path, spec, VISION) is None
    _write_sparse_vision(path, replace(FULL_VISION_DIMS, n_layer=26))
    assert check_gguf_file(path, spec, VISION) is None  # 26 layers (439 tensors) is the other candidate

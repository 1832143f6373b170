"""The tiny TTS and TTS-projector GGUFs (model-files.md §6.2/§6.3/§7, tiny dims of §9.2/§9.3): keys with
exact types and values, every tensor's name/ne/dtype, the q/k rope permutation (round trip and explicit
rows), the transposed weight-normed `head_code` (element (c, h) at h·6562 + c), `token_embd` zero extension,
the projector file = `projector_semantic`, determinism and the F32 variant; and the validation of both files
in omni_app.config (messages name the file and the key, tensor or cross-file width at fault)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_files import sha256_of as _sha256
from gguf_files import tensor_values as _tensor

from omni_app import __main__ as cli
from omni_app.config import GgufHeader, read_gguf_header, validate_model_dir
from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.llm import llm_file_name
from omni_app.tiny_models.tts import (
    FULL_TTS_DIMS,
    TINY_TTS_DIMS,
    TtsDims,
    gguf_tensors,
    permute_for_rope,
    projector_tensors,
    random_weights,
    write_tts,
    write_tts_projector,
)

TTS = "tts/MiniCPM-o-4_5-tts-F16.gguf"
PROJECTOR = "tts/MiniCPM-o-4_5-projector-F16.gguf"
U32, STR, BOOL, KF32 = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.BOOL, GGUFValueType.FLOAT32
F16, F32 = GGMLQuantizationType.F16, GGMLQuantizationType.F32
N_CODES, N_TEXT, N_VOCAB = 6562, 152064, 151748

EXPECTED_SCALARS = {
    "general.architecture": (STR, "llama"),
    "general.type": (STR, "model"),
    "general.name": (STR, "MiniCPM-o 4.5 TTS (tiny random-weight)"),
    "general.size_label": (STR, "20M"),
    "general.file_type": (U32, 1),
    "general.quantization_version": (U32, 2),
    "omni_app.tiny_demo": (BOOL, True),
    "llama.block_count": (U32, 2),
    "llama.context_length": (U32, 4096),
    "llama.embedding_length": (U32, 64),
    "llama.feed_forward_length": (U32, 128),
    "llama.attention.head_count": (U32, 2),
    "llama.attention.head_count_kv": (U32, 2),
    "llama.rope.freq_base": (KF32, 10000.0),
    "llama.attention.layer_norm_rms_epsilon": (KF32, float(np.float32(1e-6))),
    "llama.rope.dimension_count": (U32, 32),
    "llama.vocab_size": (U32, N_VOCAB),
}

# model-files.md §9.3 "TTS", written out (GGUF ne order).
EXPECTED_TENSORS = {
    "token_embd.weight": ((64, N_VOCAB), F16),
    "output_norm.weight": ((64,), F32),
    "emb_text.weight": ((64, N_TEXT), F32),
    "emb_code.0.weight": ((64, N_CODES), F32),
    "head_code.0.weight": ((N_CODES, 64), F32),
    "projector_semantic.linear1.weight": ((128, 64), F32),
    "projector_semantic.linear1.bias": ((64,), F32),
    "projector_semantic.linear2.weight": ((64, 64), F32),
    "projector_semantic.linear2.bias": ((64,), F32),
    "projector_spk.linear1.weight": ((128, 64), F16),
    "projector_spk.linear1.bias": ((64,), F32),
    "projector_spk.linear2.weight": ((64, 64), F16),
    "projector_spk.linear2.bias": ((64,), F32),
}
for _i in range(2):
    EXPECTED_TENSORS |= {
        f"blk.{_i}.attn_norm.weight": ((64,), F32),
        f"blk.{_i}.attn_q.weight": ((64, 64), F16),
        f"blk.{_i}.attn_k.weight": ((64, 64), F16),
        f"blk.{_i}.attn_v.weight": ((64, 64), F16),
        f"blk.{_i}.attn_output.weight": ((64, 64), F16),
        f"blk.{_i}.ffn_norm.weight": ((64,), F32),
        f"blk.{_i}.ffn_gate.weight": ((64, 128), F16),
        f"blk.{_i}.ffn_up.weight": ((64, 128), F16),
        f"blk.{_i}.ffn_down.weight": ((128, 64), F16),
    }

HEAD_G = "head_code.0.parametrizations.weight.original0"
HEAD_V = "head_code.0.parametrizations.weight.original1"


@pytest.fixture(scope="module")
def tts_path(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / TTS


@pytest.fixture(scope="module")
def header(tts_path: Path) -> GgufHeader:
    return read_gguf_header(tts_path)


@pytest.fixture(scope="module")
def hf_weights() -> dict[str, np.ndarray]:
    return random_weights(seed=0)


def unpermute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse given by the engine contract (tts_api.md): file rows -> HF rotate-half rows."""
    rows, cols = weight.shape
    return weight.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


# ---- keys -----------------------------------------------------------------------------------------


def test_keys_have_exact_types_and_values(header: GgufHeader, tiny_model_dir: Path) -> None:
    tokenizer_keys = {key for key in header.fields if key.startswith("tokenizer.")}
    assert set(header.fields) == set(EXPECTED_SCALARS) | tokenizer_keys
    for key, (expected_type, expected_value) in EXPECTED_SCALARS.items():
        found = header.fields[key]
        assert (key, found.type, found.value) == (key, expected_type, expected_value)
    assert header.version == 3


def test_tokenizer_is_the_tiny_llm_one(header: GgufHeader, tiny_model_dir: Path) -> None:
    llm = read_gguf_header(tiny_model_dir / llm_file_name("f16"))
    llm_keys = {key: field for key, field in llm.fields.items() if key.startswith("tokenizer.")}
    assert {key: field for key, field in header.fields.items() if key.startswith("tokenizer.")} == llm_keys
    assert len(header.value("tokenizer.ggml.tokens")) == header.value("llama.vocab_size") == N_VOCAB


# ---- tensors --------------------------------------------------------------------------------------


def test_tensor_names_ne_and_dtypes(header: GgufHeader) -> None:
    found = {name: (info.ne, info.ggml_type) for name, info in header.tensors.items()}
    assert found == EXPECTED_TENSORS
    assert len(found) == 31 and "output.weight" not in found
    assert all(info.offset % 32 == 0 for info in header.tensors.values())


def test_tensor_count_follows_the_layer_count() -> None:
    dims = TtsDims(n_embd=8, n_layer=3, n_head=2, n_ff=16, n_llm_embd=16)
    tensors = gguf_tensors(random_weights(0, dims), dims)
    assert len(tensors) == 2 + 9 * 3 + 11
    assert tensors["head_code.0.weight"].shape == (8, N_CODES)  # numpy (E, codes) = ne (codes, E)


def test_dims_of_the_release_and_the_tiny_plan() -> None:
    full = (FULL_TTS_DIMS.n_embd, FULL_TTS_DIMS.n_layer, FULL_TTS_DIMS.n_head, FULL_TTS_DIMS.n_ff)
    assert full == (768, 20, 12, 3072) and FULL_TTS_DIMS.head_dim == 64 and FULL_TTS_DIMS.n_llm_embd == 4096
    tiny = (TINY_TTS_DIMS.n_embd, TINY_TTS_DIMS.n_layer, TINY_TTS_DIMS.n_head, TINY_TTS_DIMS.n_ff)
    assert tiny == (64, 2, 2, 128) and TINY_TTS_DIMS.head_dim == 32 and TINY_TTS_DIMS.n_llm_embd == 128
    for dims in (FULL_TTS_DIMS, TINY_TTS_DIMS):
        assert (dims.n_ctx, dims.rope_base, dims.eps) == (4096, 10000.0, 1e-6)
        assert (dims.n_text, dims.n_codes, dims.n_vocab) == (N_TEXT, N_CODES, N_VOCAB)


def test_rope_permutation_interleaves_the_halves_of_each_head() -> None:
    rows = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)  # 2 heads x D=4
    assert permute_for_rope(rows, n_head=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    weight = np.random.default_rng(0).standard_normal((64, 16))
    assert np.array_equal(unpermute_rope_rows(permute_for_rope(weight, 4), 4), weight)


def test_qk_rows_are_permuted_and_other_matrices_kept(header: GgufHeader, hf_weights: dict) -> None:
    for layer in range(2):
        hf = f"model.layers.{layer}"
        for gguf_name, hf_name in (("attn_q", "q_proj"), ("attn_k", "k_proj")):
            stored = _tensor(header, f"blk.{layer}.{gguf_name}.weight").astype(np.float32)
            original = hf_weights[f"{hf}.self_attn.{hf_name}.weight"]
            assert not np.array_equal(stored, original)
            np.testing.assert_array_equal(unpermute_rope_rows(stored, 2), original)
            # head 1, pair 3: file rows 32 + 6 and 32 + 7 are HF rows 32 + 3 and 32 + 3 + 16
            np.testing.assert_array_equal(stored[[38, 39]], original[[35, 51]])
        for gguf_name, hf_name in (("attn_v", "self_attn.v_proj"), ("ffn_down", "mlp.down_proj")):
            stored = _tensor(header, f"blk.{layer}.{gguf_name}.weight").astype(np.float32)
            np.testing.assert_array_equal(stored, hf_weights[f"{hf}.{hf_name}.weight"])


def test_head_code_is_folded_weight_norm_in_transposed_layout(header: GgufHeader, hf_weights: dict) -> None:
    info = header.tensors["head_code.0.weight"]
    flat = np.memmap(header.path, dtype=np.float32, mode="r", offset=info.offset, shape=(N_CODES * 64,))
    gain, direction = hf_weights[HEAD_G].astype(np.float64), hf_weights[HEAD_V].astype(np.float64)
    expected = gain * direction / np.linalg.norm(direction, axis=1, keepdims=True)  # (codes, hidden)
    for code, hidden in [(0, 0), (1, 0), (0, 1), (6561, 63), (4218, 17), (123, 45)]:
        assert flat[hidden * N_CODES + code] == pytest.approx(expected[code, hidden], rel=1e-6)
    folded = np.asarray(flat).reshape(64, N_CODES).T
    np.testing.assert_allclose(folded, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(folded, axis=1), gain[:, 0], rtol=1e-5)


def test_token_embd_is_the_hf_table_zero_extended(header: GgufHeader, hf_weights: dict) -> None:
    table = _tensor(header, "token_embd.weight").astype(np.float32)
    np.testing.assert_array_equal(table[:32000], hf_weights["model.embed_tokens.weight"])
    assert not table[32000:].any()


def test_heads_and_projectors_keep_the_hf_values(header: GgufHeader, hf_weights: dict) -> None:
    for name in ("emb_text.weight", "emb_code.0.weight", "projector_semantic.linear1.weight"):
        np.testing.assert_array_equal(_tensor(header, name), hf_weights[name], err_msg=name)
    np.testing.assert_array_equal(_tensor(header, "output_norm.weight"), hf_weights["model.norm.weight"])


def test_values_carry_f16_precision_except_the_folded_head(header: GgufHeader) -> None:
    f32_names = [n for n, i in header.tensors.items() if i.ggml_type == F32 and n != "head_code.0.weight"]
    assert len(f32_names) == 13  # 4 block norms, output_norm, emb_text, emb_code, 4 + 2 projector tensors
    for name in f32_names:
        values = _tensor(header, name)
        np.testing.assert_array_equal(values.astype(np.float16).astype(np.float32), values, err_msg=name)


def test_weight_statistics(hf_weights: dict) -> None:
    def std_of(suffix: str) -> float:
        return float(np.concatenate([w.ravel() for n, w in hf_weights.items() if n.endswith(suffix)]).std())

    assert abs(std_of("q_proj.weight") - 0.15) < 0.01 and abs(std_of("mlp.up_proj.weight") - 0.05) < 0.003
    assert abs(std_of("emb_text.weight") - 0.15) < 0.001
    norms = np.concatenate([w for n, w in hf_weights.items() if "layernorm" in n or n == "model.norm.weight"])
    assert abs(float(norms.mean()) - 1.0) < 0.02 and 0.02 < float(norms.std()) < 0.1
    gain = hf_weights[HEAD_G][:, 0]
    assert (
        abs(float(gain[:-1].mean()) - 2.5) < 0.01
        and 1.3 < float(gain[:-1].min()) < float(gain[:-1].max()) < 3.7
    )
    assert 2.2 * 1.3 < gain[-1] < 2.2 * 3.7  # the EOS code's gain is scaled by 2.2


# ---- projector file -------------------------------------------------------------------------------


def test_projector_file_equals_projector_semantic(tiny_model_dir: Path, header: GgufHeader) -> None:
    projector = read_gguf_header(tiny_model_dir / PROJECTOR)
    assert {key: (f.type, f.value) for key, f in projector.fields.items()} == {
        "general.architecture": (STR, "projector")
    }
    assert {name: (info.ne, info.ggml_type) for name, info in projector.tensors.items()} == {
        "linear1.weight": ((128, 64), F32),
        "linear1.bias": ((64,), F32),
        "linear2.weight": ((64, 64), F32),
        "linear2.bias": ((64,), F32),
    }
    for name in projector.tensors:
        np.testing.assert_array_equal(
            _tensor(projector, name), _tensor(header, f"projector_semantic.{name}"), err_msg=name
        )


# ---- determinism and the F32 variant --------------------------------------------------------------


def test_same_seed_is_byte_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    write_tts(tmp_path / TTS, seed=0)
    write_tts_projector(tmp_path / PROJECTOR, seed=0)
    for name in (TTS, PROJECTOR):
        assert _sha256(tmp_path / name) == _sha256(tiny_model_dir / name), name


def test_tiny_directory_summary_lists_the_tts_files(tiny_model_dir: Path) -> None:
    names = {p.relative_to(tiny_model_dir).as_posix() for p in tiny_model_dir.rglob("*") if p.is_file()}
    assert {TTS, PROJECTOR} <= names


def test_other_seed_changes_every_weight(hf_weights: dict) -> None:
    other = random_weights(seed=1)
    assert list(other) == list(hf_weights)
    for name, array in hf_weights.items():
        assert not np.array_equal(array, other[name]), name


def test_f32_variant_has_same_values_in_f32(header: GgufHeader, tiny_model_dir_f32: Path) -> None:
    f32 = read_gguf_header(tiny_model_dir_f32 / TTS)
    assert f32.value("general.file_type") == 0
    assert {info.ggml_type for info in f32.tensors.values()} == {F32}
    assert [(n, i.ne) for n, i in f32.tensors.items()] == [(n, i.ne) for n, i in header.tensors.items()]
    for name in header.tensors:
        np.testing.assert_array_equal(
            _tensor(f32, name), _tensor(header, name).astype(np.float32), err_msg=name
        )
    assert _sha256(tiny_model_dir_f32 / PROJECTOR) == _sha256(header.path.parent / Path(PROJECTOR).name)
    assert validate_model_dir(tiny_model_dir_f32).stages["tts"]


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported TTS dtype 'q8'"):
        random_weights(seed=0, dtype="q8")


# ---- validation (omni_app.config) -----------------------------------------------------------------


def test_check_models_accepts_the_tiny_directory(tiny_model_dir: Path, capsys) -> None:
    report = validate_model_dir(tiny_model_dir)
    assert report.stages["tts"]
    assert [report.status_of(a).status for a in ("tts", "tts_projector")] == ["present", "present"]
    assert cli.main(["check-models", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert f"[ok     ] {TTS}" in out and f"[ok     ] {PROJECTOR}" in out
    assert "Stages available: llm, vision, audio, tts, token2wav\n" in out


# A small layout (E = 8) keeps the variant files at a few MB; the LLM is the tiny one (hidden 128).
SMALL = TtsDims(n_embd=8, n_layer=2, n_head=2, n_ff=16, n_llm_embd=128)


@functools.cache
def _small_weights() -> dict[str, np.ndarray]:
    return random_weights(0, SMALL)


def _small_keys() -> dict[str, tuple[object, GGUFValueType]]:
    return {
        "llama.block_count": (2, U32),
        "llama.context_length": (4096, U32),
        "llama.embedding_length": (8, U32),
        "llama.feed_forward_length": (16, U32),
        "llama.attention.head_count": (2, U32),
        "llama.attention.head_count_kv": (2, U32),
        "llama.rope.freq_base": (10000.0, KF32),
        "llama.attention.layer_norm_rms_epsilon": (1e-6, KF32),
    }


def _write(path: Path, arch: str, keys: dict, tensors: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, arch)
    for key, (value, value_type) in keys.items():
        writer.add_key_value(key, value, value_type)
    write_tensors_and_close(writer, tensors)


def _variant_report(
    model_dir: Path,
    tiny_llm: Path,
    edit_keys: Callable[[dict], None] = lambda keys: None,
    edit_tensors: Callable[[dict], None] = lambda tensors: None,
    edit_projector: Callable[[dict], None] = lambda tensors: None,
) -> tuple[str, str]:
    """Write a model dir (tiny LLM linked in, small TTS + projector with edits); return the validation
    messages of (tts, tts_projector)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_llm, model_dir / tiny_llm.name)
    hf = _small_weights()
    keys, tensors, projector = _small_keys(), gguf_tensors(hf, SMALL), projector_tensors(hf)
    edit_keys(keys)
    edit_tensors(tensors)
    edit_projector(projector)
    _write(model_dir / TTS, "llama", keys, tensors)
    _write(model_dir / PROJECTOR, "projector", {}, projector)
    report = validate_model_dir(model_dir)
    messages = report.status_of("tts").message, report.status_of("tts_projector").message
    assert report.stages["tts"] == (messages == ("", ""))
    return messages


def test_small_variant_is_valid(tmp_path: Path, tiny_llm_path: Path) -> None:
    assert _variant_report(tmp_path, tiny_llm_path) == ("", "")


@pytest.mark.parametrize(
    ("edit_keys", "problem"),
    [
        (lambda k: k.pop("llama.feed_forward_length"), "required key 'llama.feed_forward_length' is missing"),
        (
            lambda k: k.update({"llama.rope.freq_base": (10000.0, GGUFValueType.FLOAT64)}),
            "key 'llama.rope.freq_base' has type FLOAT64, expected FLOAT32",
        ),
        (
            lambda k: k.update({"llama.block_count": (2, GGUFValueType.INT32)}),
            "key 'llama.block_count' has type INT32, expected UINT32",
        ),
        (
            lambda k: k.update({"llama.attention.head_count": (3, U32)}),
            "key 'llama.embedding_length' (8) is not an even multiple of key "
            "'llama.attention.head_count' (3)",
        ),
        (
            lambda k: k.update({"llama.attention.head_count_kv": (0, U32)}),
            "key 'llama.attention.head_count_kv' (0) does not divide the head count (2)",
        ),
        (
            lambda k: k.update({"llama.block_count": (3, U32)}),
            "required tensor 'blk.2.attn_norm.weight' is missing",
        ),
        (
            lambda k: k.update({"llama.feed_forward_length": (32, U32)}),
            "tensor 'blk.0.ffn_gate.weight' has ne (8, 16), expected (8, 32)",
        ),
    ],
)
def test_tts_key_problems_are_named(
    tmp_path: Path, tiny_llm_path: Path, edit_keys: Callable, problem: str
) -> None:
    assert _variant_report(tmp_path, tiny_llm_path, edit_keys=edit_keys) == (f"{TTS}: {problem}", "")


@pytest.mark.parametrize(
    ("edit_tensors", "problem"),
    [
        (lambda t: t.pop("emb_code.0.weight"), "required tensor 'emb_code.0.weight' is missing"),
        (lambda t: t.pop("blk.1.attn_v.weight"), "required tensor 'blk.1.attn_v.weight' is missing"),
        (
            lambda t: t.update({"head_code.0.weight": np.ascontiguousarray(t["head_code.0.weight"].T)}),
            "tensor 'head_code.0.weight' has ne (8, 6562), expected (6562, 8)",
        ),
        (
            lambda t: t.update({"emb_code.0.weight": np.zeros((6561, 8), np.float32)}),
            "tensor 'emb_code.0.weight' has ne (8, 6561), expected (8, 6562)",
        ),
        (
            lambda t: t.update({"emb_text.weight": np.zeros((151692, 8), np.float32)}),
            "tensor 'emb_text.weight' has 151692 rows, but the TTS ids 151687/151692 need at least 151693",
        ),
        (
            lambda t: t.update({"projector_semantic.linear2.bias": np.zeros(16, np.float32)}),
            "tensor 'projector_semantic.linear2.bias' has ne (16,), expected (8,)",
        ),
        (
            lambda t: t.update({"projector_semantic.linear1.weight": np.zeros((8, 64), np.float32)}),
            "tensor 'projector_semantic.linear1.weight' takes 64 inputs, but the LLM hidden size is 128 "
            "(MiniCPM-o-4_5-F16.gguf)",
        ),
    ],
)
def test_tts_tensor_problems_are_named(
    tmp_path: Path, tiny_llm_path: Path, edit_tensors: Callable, problem: str
) -> None:
    assert _variant_report(tmp_path, tiny_llm_path, edit_tensors=edit_tensors) == (f"{TTS}: {problem}", "")


@pytest.mark.parametrize(
    ("edit_projector", "problem"),
    [
        (lambda t: t.pop("linear2.bias"), "required tensor 'linear2.bias' is missing"),
        (
            lambda t: t.update({"linear2.weight": np.zeros((8, 16), np.float32)}),
            "tensor 'linear2.weight' has ne (16, 8), expected (8, 8)",
        ),
        (
            lambda t: t.update(
                {"linear1.weight": np.zeros((8, 4096), np.float32), "linear1.bias": np.zeros(8, np.float32)}
            ),
            "tensor 'linear1.weight' takes 4096 inputs, but the LLM hidden size is 128 "
            "(MiniCPM-o-4_5-F16.gguf)",
        ),
        (
            lambda t: t.update(
                {
                    "linear1.weight": np.zeros((16, 128), np.float32),
                    "linear1.bias": np.zeros(16, np.float32),
                    "linear2.weight": np.zeros((16, 16), np.float32),
                    "linear2.bias": np.zeros(16, np.float32),
                }
            ),
            "tensor 'linear1.weight' gives 16 outputs, but the TTS hidden size (llama.embedding_length) is 8",
        ),
    ],
)
def test_projector_problems_are_named(
    tmp_path: Path, tiny_llm_path: Path, edit_projector: Callable, problem: str
) -> None:
    assert _variant_report(tmp_path, tiny_llm_path, edit_projector=edit_projector) == (
        "",
        f"{PROJECTOR}: {problem}",
    )

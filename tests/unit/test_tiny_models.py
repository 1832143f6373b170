"""The tiny LLM GGUF: official names, exact metadata keys/types (model-files.md §3.2), tensors (§3.3 with the
tiny dims of §9.2), every special token at its real id (pipeline.md §2, model-files.md §3.4), determinism."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_files import sha256_of as _sha256
from gguf_files import tensor_values as _tensor

from omni_app.config import GgufHeader, read_gguf_header
from omni_app.tiny_models import write_tiny_model_dir
from omni_app.tiny_models.tokenizer import bytes_to_unicode, learn_merges

U32, F32, STR, BOOL = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING, GGUFValueType.BOOL

EXPECTED_SCALARS = {
    "general.architecture": (STR, "qwen3"),
    "general.type": (STR, "model"),
    "general.file_type": (U32, 1),
    "general.quantization_version": (U32, 2),
    "omni_app.tiny_demo": (BOOL, True),
    "qwen3.block_count": (U32, 2),
    "qwen3.context_length": (U32, 40960),
    "qwen3.embedding_length": (U32, 128),
    "qwen3.feed_forward_length": (U32, 256),
    "qwen3.attention.head_count": (U32, 2),
    "qwen3.attention.head_count_kv": (U32, 1),
    "qwen3.attention.key_length": (U32, 64),
    "qwen3.attention.value_length": (U32, 64),
    "qwen3.attention.layer_norm_rms_epsilon": (F32, pytest.approx(1e-6, rel=1e-6)),
    "qwen3.rope.freq_base": (F32, 1e6),
    "tokenizer.ggml.model": (STR, "gpt2"),
    "tokenizer.ggml.pre": (STR, "qwen2"),
    "tokenizer.ggml.bos_token_id": (U32, 151644),
    "tokenizer.ggml.eos_token_id": (U32, 151645),
    "tokenizer.ggml.padding_token_id": (U32, 151643),
    "tokenizer.ggml.unknown_token_id": (U32, 128244),
    "tokenizer.ggml.add_bos_token": (BOOL, False),
}

# pipeline.md §2 / model-files.md §3.4 (written out here, independent of the generator's table).
SPECIAL_TOKENS = {
    151643: "<|endoftext|>",
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151657: "<tool_call>",
    151658: "</tool_call>",
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
    151669: "<image>",
    151670: "</image>",
    151679: "<slice>",
    151680: "</slice>",
    151681: "<image_id>",
    151682: "</image_id>",
    151683: "<unit>",
    151684: "</unit>",
    151687: "<focus>",
    151692: "</perception>",
    151697: "<|audio_start|>",
    151698: "<|audio|>",
    151699: "<|audio_end|>",
    151700: "<|spk_bos|>",
    151701: "<|spk|>",
    151702: "<|spk_eos|>",
    151703: "<|tts_bos|>",
    151704: "<|tts_eos|>",
    151705: "<|listen|>",
    151706: "<|speak|>",
    151707: "<|interrupt|>",
    151708: "<|vad_start|>",
    151709: "<|vad_end|>",
    151716: "<|turn_bos|>",
    151717: "<|turn_eos|>",
    151718: "<|chunk_eos|>",
    151719: "<|chunk_bos|>",
    151720: "<|chunk_tts_bos|>",
    151721: "<|chunk_tts_eos|>",
    151722: "<|tts_pad|>",
    151723: "<|timbre_7|>",
    151747: "<|timbre_31|>",
    128244: "<unk>",
}
USER_DEFINED = {"<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"}

F16, TF32 = GGMLQuantizationType.F16, GGMLQuantizationType.F32
V = 151748
EXPECTED_TENSORS = {
    "token_embd.weight": ((128, V), F16),
    "output.weight": ((128, V), F16),
    "output_norm.weight": ((128,), TF32),
}
for _layer in range(2):
    EXPECTED_TENSORS |= {
        f"blk.{_layer}.attn_norm.weight": ((128,), TF32),
        f"blk.{_layer}.attn_q.weight": ((128, 128), F16),
        f"blk.{_layer}.attn_k.weight": ((128, 64), F16),
        f"blk.{_layer}.attn_v.weight": ((128, 64), F16),
        f"blk.{_layer}.attn_output.weight": ((128, 128), F16),
        f"blk.{_layer}.attn_q_norm.weight": ((64,), TF32),
        f"blk.{_layer}.attn_k_norm.weight": ((64,), TF32),
        f"blk.{_layer}.ffn_norm.weight": ((128,), TF32),
        f"blk.{_layer}.ffn_gate.weight": ((128, 256), F16),
        f"blk.{_layer}.ffn_up.weight": ((128, 256), F16),
        f"blk.{_layer}.ffn_down.weight": ((256, 128), F16),
    }


@pytest.fixture(scope="module")
def header(tiny_llm_path: Path) -> GgufHeader:
    return read_gguf_header(tiny_llm_path)


def test_directory_has_official_names_and_marker(tiny_model_dir: Path) -> None:
    names = sorted(p.relative_to(tiny_model_dir).as_posix() for p in tiny_model_dir.rglob("*") if p.is_file())
    assert names == [
        "MiniCPM-o-4_5-F16.gguf",
        "TINY_DEMO_README.txt",
        "audio/MiniCPM-o-4_5-audio-F16.gguf",
        "token2wav-gguf/encoder.gguf",
        "token2wav-gguf/flow_extra.gguf",
        "token2wav-gguf/flow_matching.gguf",
        "token2wav-gguf/hifigan2.gguf",
        "token2wav-gguf/prompt_cache.gguf",
        "tts/MiniCPM-o-4_5-projector-F16.gguf",
        "tts/MiniCPM-o-4_5-tts-F16.gguf",
        "vision/MiniCPM-o-4_5-vision-F16.gguf",
    ]
    assert "RANDOM-WEIGHT" in (tiny_model_dir / "TINY_DEMO_README.txt").read_text(encoding="utf-8")


def test_summary_lists_written_files_with_sizes(tmp_path: Path) -> None:
    summary = write_tiny_model_dir(tmp_path / "d", seed=3)
    llm, audio = (
        tmp_path / "d" / "MiniCPM-o-4_5-F16.gguf",
        tmp_path / "d" / "audio/MiniCPM-o-4_5-audio-F16.gguf",
    )
    assert list(summary["files"]) == [
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
        "TINY_DEMO_README.txt",
    ]
    assert summary["files"]["MiniCPM-o-4_5-F16.gguf"] == llm.stat().st_size
    assert summary["files"]["audio/MiniCPM-o-4_5-audio-F16.gguf"] == audio.stat().st_size
    assert summary["total_bytes"] == sum(summary["files"].values())
    assert (summary["seed"], summary["dtype"]) == (3, "f16")


def test_scalar_keys_have_exact_types_and_values(header: GgufHeader) -> None:
    for key, (expected_type, expected_value) in EXPECTED_SCALARS.items():
        field = header.fields[key]
        assert (key, field.type) == (key, expected_type)
        assert field.value == expected_value, key
    assert header.version == 3
    assert "general.alignment" not in header.fields


def test_tokenizer_arrays_have_exact_types(header: GgufHeader) -> None:
    tokens = header.fields["tokenizer.ggml.tokens"]
    types = header.fields["tokenizer.ggml.token_type"]
    merges = header.fields["tokenizer.ggml.merges"]
    assert (tokens.type, tokens.item_type) == (GGUFValueType.ARRAY, STR)
    assert (types.type, types.item_type) == (GGUFValueType.ARRAY, GGUFValueType.INT32)
    assert (merges.type, merges.item_type) == (GGUFValueType.ARRAY, STR)
    assert len(tokens.value) == len(types.value) == V
    assert len(merges.value) >= 500


def test_special_tokens_at_real_ids_with_types(header: GgufHeader) -> None:
    tokens = header.value("tokenizer.ggml.tokens")
    types = header.value("tokenizer.ggml.token_type")
    for token_id, text in SPECIAL_TOKENS.items():
        assert tokens[token_id] == text
        assert types[token_id] == (4 if text in USER_DEFINED else 3), text
    # All 105 added tokens are special (control or user-defined), with exactly the six user-defined ones.
    assert Counter(types[151643:]) == {3: 99, 4: 6}
    assert all(t.startswith("<") and t.endswith(">") for t in tokens[151643:])


def test_byte_symbols_merges_and_fillers(header: GgufHeader) -> None:
    tokens = header.value("tokenizer.ggml.tokens")
    types = header.value("tokenizer.ggml.token_type")
    assert sorted(tokens[:256]) == sorted(bytes_to_unicode().values())
    assert (tokens[0], tokens[198], tokens[220], tokens[255]) == ("!", "Ċ", "Ġ", "Ń")  # "\n" 198, " " 220
    assert len(set(tokens)) == V
    ids = {token: index for index, token in enumerate(tokens)}
    merges = header.value("tokenizer.ggml.merges")
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ")
        assert ids[left + right] == 256 + rank, merge
        assert ids[left] < ids[left + right] and ids[right] < ids[left + right]
    normal = [i for i in range(151643) if i != 128244]
    assert all(types[i] == 1 for i in normal)


def test_system_prompt_text_is_covered_by_merges(header: GgufHeader) -> None:
    tokens = set(header.value("tokenizer.ggml.tokens"))
    table = bytes_to_unicode()
    for word in ("你好", "面壁", "助手", "ĠPlease", "Ġvoice", "Ġassistant"):
        encoded = "".join(table[b] for b in word.encode()) if not word.startswith("Ġ") else word
        assert encoded in tokens, word


def test_tensor_names_shapes_and_dtypes(header: GgufHeader) -> None:
    found = {name: (info.ne, info.ggml_type) for name, info in header.tensors.items()}
    assert found == EXPECTED_TENSORS
    assert all(info.offset % 32 == 0 for info in header.tensors.values())


def test_weight_statistics(header: GgufHeader) -> None:
    embedding = np.asarray(_tensor(header, "token_embd.weight"), dtype=np.float32)
    assert embedding.shape == (V, 128)
    assert abs(float(embedding.std()) - 0.02) < 1e-3
    norm = np.asarray(_tensor(header, "output_norm.weight"))
    assert abs(float(norm.mean()) - 1.0) < 0.02 and 0 < float(norm.std()) < 0.1


def test_file_size_bound(tiny_llm_path: Path) -> None:
    assert 70_000_000 < tiny_llm_path.stat().st_size < 100_000_000


def test_same_seed_is_byte_identical(tiny_llm_path: Path, tmp_path: Path) -> None:
    write_tiny_model_dir(tmp_path, seed=0)
    assert _sha256(tmp_path / "MiniCPM-o-4_5-F16.gguf") == _sha256(tiny_llm_path)


def test_other_seed_changes_weights_only(header: GgufHeader, tmp_path: Path) -> None:
    write_tiny_model_dir(tmp_path, seed=1)
    other = read_gguf_header(tmp_path / "MiniCPM-o-4_5-F16.gguf")
    assert {k: f.value for k, f in other.fields.items()} == {k: f.value for k, f in header.fields.items()}
    for name in ("token_embd.weight", "blk.1.ffn_down.weight", "blk.0.attn_k_norm.weight"):
        assert not np.array_equal(_tensor(other, name), _tensor(header, name)), name


def test_f32_variant_has_f32_matrices_and_same_values(header: GgufHeader, tiny_llm_f32_path: Path) -> None:
    f32 = read_gguf_header(tiny_llm_f32_path)
    assert tiny_llm_f32_path.name == "MiniCPM-o-4_5-F32.gguf"
    assert f32.fields["general.file_type"].value == 0
    assert {info.ggml_type for info in f32.tensors.values()} == {TF32}
    wide = np.asarray(_tensor(f32, "blk.0.attn_q.weight"))
    narrow = np.asarray(_tensor(header, "blk.0.attn_q.weight"))
    np.testing.assert_array_equal(wide.astype(np.float16), narrow)


def test_unknown_dtype_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported LLM dtype 'q4'"):
        write_tiny_model_dir(tmp_path, dtype="q4")


def test_merge_learner_on_toy_corpus() -> None:
    words = Counter({("a", "b", "c"): 3, ("a", "b"): 2, ("c", "c", "c", "c"): 1})
    assert learn_merges(words, max_merges=10, max_symbols=3) == [
        ("a", "b"),
        ("ab", "c"),
        ("c", "c"),
    ]
    assert learn_merges(words, max_merges=1) == [("a", "b")]

"""Tiny random-weight stand-in for `MiniCPM-o-4_5-<quant>.gguf`: a standard `qwen3` GGUF that stock libllama
loads (model-files.md §3.2/§3.3, tiny dimensions of §9.2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from omni_app.tiny_models import tokenizer
from omni_app.tiny_models.gguf_io import write_tensors_and_close

TINY_DEMO_KEY = "omni_app.tiny_demo"
ARCH = "qwen3"
MATRIX_SIGMA = 0.02
NORM_SIGMA = 0.05

# A plain ChatML template (ours), so generic llama.cpp tools can chat with the file; the engine builds its
# own prompts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class LlmDims:
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 2
    n_head_kv: int = 1
    head_dim: int = 64
    n_ff: int = 256
    n_vocab: int = tokenizer.VOCAB_SIZE
    n_ctx_train: int = 40960
    rms_eps: float = 1e-6
    rope_freq_base: float = 1e6


TINY_DIMS = LlmDims()

_FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
_MATRIX_DTYPES = {"f16": np.float16, "f32": np.float32}


def llm_file_name(dtype: str) -> str:
    """Official file name for the quantization tag of `dtype` (F16 is an official release name)."""
    return f"MiniCPM-o-4_5-{dtype.upper()}.gguf"


def tensor_shapes(dims: LlmDims = TINY_DIMS) -> dict[str, tuple[int, ...]]:
    """numpy shapes of every tensor, in file order (GGUF ne is the reverse: Linear (out, in) -> (in, out))."""
    q_width = dims.n_head * dims.head_dim
    kv_width = dims.n_head_kv * dims.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (dims.n_vocab, dims.n_embd),
        "output.weight": (dims.n_vocab, dims.n_embd),
        "output_norm.weight": (dims.n_embd,),
    }
    for layer in range(dims.n_layer):
        block = f"blk.{layer}"
        shapes[f"{block}.attn_norm.weight"] = (dims.n_embd,)
        shapes[f"{block}.attn_q.weight"] = (q_width, dims.n_embd)
        shapes[f"{block}.attn_k.weight"] = (kv_width, dims.n_embd)
        shapes[f"{block}.attn_v.weight"] = (kv_width, dims.n_embd)
        shapes[f"{block}.attn_output.weight"] = (dims.n_embd, q_width)
        shapes[f"{block}.attn_q_norm.weight"] = (dims.head_dim,)
        shapes[f"{block}.attn_k_norm.weight"] = (dims.head_dim,)
        shapes[f"{block}.ffn_norm.weight"] = (dims.n_embd,)
        shapes[f"{block}.ffn_gate.weight"] = (dims.n_ff, dims.n_embd)
        shapes[f"{block}.ffn_up.weight"] = (dims.n_ff, dims.n_embd)
        shapes[f"{block}.ffn_down.weight"] = (dims.n_embd, dims.n_ff)
    return shapes


def random_weights(seed: int, dtype: str, dims: LlmDims = TINY_DIMS) -> dict[str, np.ndarray]:
    """Seeded weights: matrices N(0, 0.02) in the release dtype, norm vectors N(1, 0.05) in F32."""
    if dtype not in _MATRIX_DTYPES:
        raise ValueError(f"unsupported LLM dtype {dtype!r}; expected one of {sorted(_MATRIX_DTYPES)}")
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in tensor_shapes(dims).items():
        if len(shape) == 1:
            weights[name] = (1.0 + NORM_SIGMA * rng.standard_normal(shape, dtype=np.float32)).astype(
                np.float32
            )
        else:
            matrix = MATRIX_SIGMA * rng.standard_normal(shape, dtype=np.float32)
            weights[name] = matrix.astype(_MATRIX_DTYPES[dtype])
    return weights


def add_model_metadata(
    writer: gguf.GGUFWriter, dims: LlmDims, file_type: int, name: str, tiny_demo: bool
) -> None:
    """The qwen3 keys of model-files.md §3.2 with their exact types (shared with the full-size writer)."""
    writer.add_string("general.type", "model")
    writer.add_string("general.name", name)
    writer.add_uint32("general.file_type", file_type)
    writer.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)
    if tiny_demo:
        writer.add_bool(TINY_DEMO_KEY, True)
    writer.add_uint32(f"{ARCH}.block_count", dims.n_layer)
    writer.add_uint32(f"{ARCH}.context_length", dims.n_ctx_train)
    writer.add_uint32(f"{ARCH}.embedding_length", dims.n_embd)
    writer.add_uint32(f"{ARCH}.feed_forward_length", dims.n_ff)
    writer.add_uint32(f"{ARCH}.attention.head_count", dims.n_head)
    writer.add_uint32(f"{ARCH}.attention.head_count_kv", dims.n_head_kv)
    writer.add_uint32(f"{ARCH}.attention.key_length", dims.head_dim)
    writer.add_uint32(f"{ARCH}.attention.value_length", dims.head_dim)
    writer.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", dims.rms_eps)
    writer.add_float32(f"{ARCH}.rope.freq_base", dims.rope_freq_base)


def add_tokenizer_metadata(writer: gguf.GGUFWriter) -> None:
    """The tiny vocabulary: real size, special tokens at their real ids (the full-size writer uses it too)."""
    vocab = tokenizer.build_vocabulary()
    array = gguf.GGUFValueType.ARRAY
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "qwen2")
    writer.add_key_value("tokenizer.ggml.tokens", list(vocab.tokens), array, gguf.GGUFValueType.STRING)
    writer.add_key_value(
        "tokenizer.ggml.token_type", list(vocab.token_types), array, gguf.GGUFValueType.INT32
    )
    # Never empty (gguf-py would drop the key and libllama then refuses the file).
    writer.add_key_value("tokenizer.ggml.merges", list(vocab.merges), array, gguf.GGUFValueType.STRING)
    writer.add_uint32("tokenizer.ggml.bos_token_id", tokenizer.BOS_ID)
    writer.add_uint32("tokenizer.ggml.eos_token_id", tokenizer.EOS_ID)
    writer.add_uint32("tokenizer.ggml.padding_token_id", tokenizer.PAD_ID)
    writer.add_uint32("tokenizer.ggml.unknown_token_id", tokenizer.UNK_ID)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_string("tokenizer.chat_template", CHAT_TEMPLATE)


def write_llm(path: Path, seed: int = 0, dtype: str = "f16", dims: LlmDims = TINY_DIMS) -> Path:
    """Write the tiny LLM GGUF to `path` (same seed and dtype -> byte-identical file)."""
    weights = random_weights(seed, dtype, dims)
    writer = gguf.GGUFWriter(path, ARCH)
    add_model_metadata(
        writer, dims, int(_FILE_TYPES[dtype]), "MiniCPM-o 4.5 tiny random-weight LLM", tiny_demo=True
    )
    add_tokenizer_metadata(writer)
    write_tensors_and_close(writer, weights)
    return path

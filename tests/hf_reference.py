"""PyTorch/HF reference for the tiny LLM, built from the GGUF file itself (tests only).

- `reference_tokenizer()`: a `tokenizers` byte-level BPE with the vocabulary + merges of the tiny model,
  the Qwen2 pre-tokenizer regex (as in Qwen2's tokenizer.json) and every added token, i.e. what transformers
  would load from a real Qwen2/MiniCPM-o tokenizer.json with our vocabulary.
- `reference_model(path)`: transformers `Qwen3ForCausalLM` (float32, eager attention) with the GGUF's weights.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM
from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

from omni_app.config import GgufHeader, read_gguf_header
from omni_app.tiny_models import tokenizer as tiny_vocab

# Qwen2 tokenizer.json pre-tokenizer pattern (llama.cpp's "qwen2" pre-type uses the same pattern with the
# case-insensitive group spelled out).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_NUMPY_TYPES = {"F32": np.float32, "F16": np.float16}

# GGUF block tensor -> transformers decoder-layer parameter, for the Llama layout (the TTS uses it as is).
LLAMA_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Qwen3 adds RMSNorms on the queries and keys.
_LAYER_NAMES = LLAMA_LAYER_NAMES | {
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output.weight": "lm_head.weight",
    "output_norm.weight": "model.norm.weight",
}


def read_tensor(header: GgufHeader, name: str) -> np.ndarray:
    """A tensor as float32 numpy, shape = reversed ne (so a Linear weight comes back as (out, in))."""
    info = header.tensors[name]
    dtype = _NUMPY_TYPES[info.ggml_type.name]
    shape = tuple(reversed(info.ne))
    data = np.memmap(header.path, dtype=dtype, mode="r", offset=info.offset, shape=shape)
    return np.array(data, dtype=np.float32)


def hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    _, layer, rest = gguf_name.split(".", 2)
    return f"model.layers.{layer}.{_LAYER_NAMES[rest]}"


def reference_config(header: GgufHeader) -> Qwen3Config:
    value = header.value
    return Qwen3Config(
        vocab_size=len(value("tokenizer.ggml.tokens")),
        hidden_size=value("qwen3.embedding_length"),
        intermediate_size=value("qwen3.feed_forward_length"),
        num_hidden_layers=value("qwen3.block_count"),
        num_attention_heads=value("qwen3.attention.head_count"),
        num_key_value_heads=value("qwen3.attention.head_count_kv"),
        head_dim=value("qwen3.attention.key_length"),
        rms_norm_eps=value("qwen3.attention.layer_norm_rms_epsilon"),
        rope_theta=value("qwen3.rope.freq_base"),
        max_position_embeddings=value("qwen3.context_length"),
        tie_word_embeddings=False,
        attention_bias=False,
        hidden_act="silu",
    )


def reference_model(path: Path) -> Qwen3ForCausalLM:
    """Qwen3ForCausalLM in float32 holding exactly the GGUF's weights (F16 values widened to F32)."""
    header = read_gguf_header(path)
    config = reference_config(header)
    config._attn_implementation = "eager"
    model = Qwen3ForCausalLM(config).to(torch.float32).eval()
    state = {hf_name(name): torch.from_numpy(read_tensor(header, name)) for name in header.tensors}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if "rotary_emb" not in name]
    if missing or unexpected:
        raise AssertionError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    return model


@torch.no_grad()
def reference_forward(model: Qwen3ForCausalLM, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(logits (n, vocab), final-norm hidden states (n, n_embd)) for one sequence starting at position 0."""
    output = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    return output.logits[0].numpy(), output.hidden_states[-1][0].numpy()


@torch.no_grad()
def reference_greedy(model: Qwen3ForCausalLM, prompt: list[int], n_new: int) -> list[int]:
    """Plain argmax decoding with the HF KV cache (no generation-config processors such as EOS handling)."""
    output = model(torch.tensor([prompt]), use_cache=True)
    generated: list[int] = []
    for _ in range(n_new):
        token = int(output.logits[0, -1].argmax())
        generated.append(token)
        output = model(torch.tensor([[token]]), past_key_values=output.past_key_values, use_cache=True)
    return generated


@torch.no_grad()
def reference_remove_then_step(
    model: Qwen3ForCausalLM, ids: list[int], p0: int, p1: int, probe: int
) -> np.ndarray:
    """Logits for `probe` after evaluating `ids`, dropping cache positions [p0, p1) and moving the later
    entries down by d = p1 - p0 with their keys re-rotated (RoPE is a rotation: rotating a key of position p
    by -d gives the key of position p - d). Values and later-layer entries stay as computed, which is what a
    KV shift does; this is *not* a fresh context without the dropped tokens (later layers saw them)."""
    full = model(torch.tensor([ids]), use_cache=True).past_key_values
    delta = p1 - p0
    cos, sin = model.model.rotary_emb(full.layers[0].keys, torch.tensor([[-delta]]))
    shifted = DynamicCache(config=model.config)
    for index, layer in enumerate(full.layers):
        keys, values = layer.keys, layer.values
        moved, _ = apply_rotary_pos_emb(keys[:, :, p1:], keys[:, :, p1:], cos, sin)
        kept_keys = torch.cat([keys[:, :, :p0], moved], dim=2)
        shifted.update(kept_keys, torch.cat([values[:, :, :p0], values[:, :, p1:]], dim=2), index)
    position = len(ids) - delta
    output = model(
        torch.tensor([[probe]]),
        past_key_values=shifted,
        position_ids=torch.tensor([[position]]),
        cache_position=torch.tensor([position]),
        use_cache=True,
    )
    return output.logits[0, -1].numpy()


@lru_cache(maxsize=1)
def reference_tokenizer() -> Tokenizer:
    vocab = tiny_vocab.build_vocabulary()
    merges = [tuple(merge.split(" ")) for merge in vocab.merges]
    bpe = models.BPE(
        vocab={token: index for index, token in enumerate(vocab.tokens)},
        merges=merges,
        fuse_unk=False,
        byte_fallback=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.NFC()  # as in Qwen2's tokenizer.json; test strings are NFC already
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    control = [
        tiny_vocab.UNK_TOKEN,
        *(t for t in tiny_vocab.ADDED_TOKENS if t not in tiny_vocab.USER_DEFINED_TOKENS),
    ]
    user_defined = [t for t in tiny_vocab.ADDED_TOKENS if t in tiny_vocab.USER_DEFINED_TOKENS]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user_defined])
    return tokenizer


def reference_tokenize(text: str) -> list[int]:
    return reference_tokenizer().encode(text, add_special_tokens=False).ids

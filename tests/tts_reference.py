"""PyTorch/NumPy reference for the TTS stage (speech-token LM), built from the GGUF files themselves
(tests only).

- `reference_tts_model(path)`: a transformers `LlamaModel` (eager attention, float64 by default) configured
  from the file's `llama.*` keys and holding its backbone weights, with `attn_q`/`attn_k` rows brought back
  from the file's interleaved-pair rope layout to the HF rotate-half layout; plus `emb_text`, `emb_code.0`,
  `head_code.0` as a (codes, E) matrix and the semantic projector (Linear, ReLU, Linear) from the TTS file or
  from the projector file. The backbone's own `embed_tokens` is never used: rows go in as `inputs_embeds`.
- `reference_condition` / `condition_rows`: emb_text[id] + F.normalize(projector(hidden), dim=-1)
  (pipeline.md §7.1), followed by text-EOS (last chunk only) and audio-BOS rows.
- `reference_logits`, `reference_greedy`: head_code @ final-norm hidden state, one causal pass from
  position 0.
- `reference_process` / `reference_choose`: the speech-token sampler of the engine contract written from its
  definition (temperature, count-based repetition penalty, HF-style TopP then TopK with min_keep).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hf_reference import LLAMA_LAYER_NAMES, read_tensor
from torch import nn
from transformers import LlamaConfig, LlamaModel

from omni_app.config import GgufHeader, read_gguf_header

AUDIO_BOS_ID = 151687  # LLM token <focus>, the TTS's audio-BOS row of emb_text
TEXT_EOS_ID = 151692  # LLM token </perception>, the TTS's text-EOS row of emb_text
EOS_CODE = 6561
NORMALIZE_EPS = 1e-12  # torch F.normalize default


def unpermute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """File q/k rows (interleaved pairs per head) -> HF rotate-half rows: per head of size D, file rows
    2i and 2i + 1 become HF rows i and i + D/2."""
    rows, cols = weight.shape
    head_dim = rows // n_head
    return weight.reshape(n_head, head_dim // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def tts_config(header: GgufHeader) -> LlamaConfig:
    value = header.value
    config = LlamaConfig(
        vocab_size=8,  # embed_tokens is never used (inputs_embeds only)
        hidden_size=value("llama.embedding_length"),
        intermediate_size=value("llama.feed_forward_length"),
        num_hidden_layers=value("llama.block_count"),
        num_attention_heads=value("llama.attention.head_count"),
        num_key_value_heads=value("llama.attention.head_count_kv"),
        rms_norm_eps=value("llama.attention.layer_norm_rms_epsilon"),
        rope_theta=value("llama.rope.freq_base"),
        max_position_embeddings=value("llama.context_length"),
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"
    return config


@dataclass
class TtsReference:
    backbone: LlamaModel
    emb_text: torch.Tensor  # (n_text, E)
    emb_code: torch.Tensor  # (n_codes, E)
    head_code: torch.Tensor  # (n_codes, E): logits = head_code @ h
    projector: nn.Sequential  # Linear(H_llm, E), ReLU, Linear(E, E)

    @property
    def dtype(self) -> torch.dtype:
        return self.head_code.dtype

    @property
    def n_codes(self) -> int:
        return self.head_code.shape[0]


def _backbone_state(header: GgufHeader) -> dict[str, torch.Tensor]:
    n_head = header.value("llama.attention.head_count")
    n_head_kv = header.value("llama.attention.head_count_kv")
    state = {"norm.weight": torch.from_numpy(read_tensor(header, "output_norm.weight"))}
    for layer in range(header.value("llama.block_count")):
        for gguf_part, hf_part in LLAMA_LAYER_NAMES.items():
            array = read_tensor(header, f"blk.{layer}.{gguf_part}")
            if gguf_part in ("attn_q.weight", "attn_k.weight"):
                array = unpermute_rope_rows(array, n_head if gguf_part == "attn_q.weight" else n_head_kv)
            state[f"layers.{layer}.{hf_part}"] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def _projector(header: GgufHeader, prefix: str) -> nn.Sequential:
    weight1 = torch.from_numpy(read_tensor(header, f"{prefix}linear1.weight"))
    weight2 = torch.from_numpy(read_tensor(header, f"{prefix}linear2.weight"))
    (n_embd, n_in), n_out = weight1.shape, weight2.shape[0]
    projector = nn.Sequential(nn.Linear(n_in, n_embd), nn.ReLU(), nn.Linear(n_embd, n_out))
    projector.load_state_dict(
        {
            "0.weight": weight1,
            "0.bias": torch.from_numpy(read_tensor(header, f"{prefix}linear1.bias")),
            "2.weight": weight2,
            "2.bias": torch.from_numpy(read_tensor(header, f"{prefix}linear2.bias")),
        }
    )
    return projector


def reference_tts_model(
    path: Path, projector_path: Path | None = None, dtype: torch.dtype = torch.float64
) -> TtsReference:
    """The TTS of the GGUF at `path` in `dtype` (F16 weights widened exactly). The semantic projector comes
    from `projector_path` (the projector file) when given, else from the TTS file's `projector_semantic.*`."""
    header = read_gguf_header(path)
    backbone = LlamaModel(tts_config(header))
    missing, unexpected = backbone.load_state_dict(_backbone_state(header), strict=False)
    missing = [name for name in missing if name != "embed_tokens.weight" and "rotary_emb" not in name]
    if missing or unexpected:
        raise AssertionError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    if projector_path is None:
        projector = _projector(header, "projector_semantic.")
    else:
        projector = _projector(read_gguf_header(projector_path), "")
    head_code = np.ascontiguousarray(read_tensor(header, "head_code.0.weight").T)  # stored (E, codes)
    return TtsReference(
        backbone=backbone.to(dtype).eval(),
        emb_text=torch.from_numpy(read_tensor(header, "emb_text.weight")).to(dtype),
        emb_code=torch.from_numpy(read_tensor(header, "emb_code.0.weight")).to(dtype),
        head_code=torch.from_numpy(head_code).to(dtype),
        projector=projector.to(dtype).eval(),
    )


# ---- condition ------------------------------------------------------------------------------------


@torch.no_grad()
def reference_condition(model: TtsReference, ids: list[int], hidden: np.ndarray) -> np.ndarray:
    """(n, E) float64: emb_text[id] + F.normalize(linear2(relu(linear1(hidden))), dim=-1)."""
    projected = model.projector(torch.as_tensor(np.asarray(hidden), dtype=model.dtype))
    merged = model.emb_text[torch.tensor(ids, dtype=torch.long)] + nn.functional.normalize(
        projected, dim=-1, eps=NORMALIZE_EPS
    )
    return merged.double().numpy()


def text_rows(model: TtsReference, ids: list[int]) -> np.ndarray:
    return model.emb_text[torch.tensor(ids, dtype=torch.long)].double().numpy()


def code_rows(model: TtsReference, codes: list[int]) -> np.ndarray:
    return model.emb_code[torch.tensor(codes, dtype=torch.long)].double().numpy()


def condition_rows(model: TtsReference, ids: list[int], hidden: np.ndarray, last: bool) -> np.ndarray:
    """One chunk's condition (pipeline.md §7.1, PY simplex): merged rows + (text-EOS if last) + audio-BOS."""
    tail = [TEXT_EOS_ID, AUDIO_BOS_ID] if last else [AUDIO_BOS_ID]
    merged = reference_condition(model, ids, hidden) if ids else np.zeros((0, model.head_code.shape[1]))
    return np.concatenate([merged, text_rows(model, tail)])


# ---- forward --------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logits(model: TtsReference, rows: np.ndarray) -> np.ndarray:
    """(n, n_codes) float64 logits of every row, the rows at positions 0..n-1 in one causal pass."""
    embeds = torch.as_tensor(np.asarray(rows), dtype=model.dtype).unsqueeze(0)
    hidden = model.backbone(inputs_embeds=embeds, use_cache=False).last_hidden_state[0]
    return (hidden @ model.head_code.T).double().numpy()


@torch.no_grad()
def reference_greedy(model: TtsReference, condition: np.ndarray, n_tokens: int) -> list[int]:
    """Argmax codes after prefilling `condition` at position 0; each code's emb_code row is fed next; stops
    before EOS (never returned or fed) or after `n_tokens` codes."""
    embeds = torch.as_tensor(np.asarray(condition), dtype=model.dtype).unsqueeze(0)
    output = model.backbone(inputs_embeds=embeds, use_cache=True)
    codes: list[int] = []
    while len(codes) < n_tokens:
        code = int((model.head_code @ output.last_hidden_state[0, -1]).argmax())
        if code == EOS_CODE:
            break
        codes.append(code)
        output = model.backbone(
            inputs_embeds=model.emb_code[code].reshape(1, 1, -1),
            past_key_values=output.past_key_values,
            use_cache=True,
        )
    return codes


# ---- sampler --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSettings:
    """The fields of `omni_engine.TtsSamplingParams` that shape the distribution (defaults: pipeline.md
    §7.3)."""

    temperature: float = 0.8
    repetition_penalty: float = 1.05
    penalty_window: int = 16
    top_p: float = 0.85
    top_k: int = 25
    min_keep: int = 3


def repetition_penalty(logits: np.ndarray, history: list[int], penalty: float, window: int) -> np.ndarray:
    """alpha = penalty ** (occurrences in the last `window` history entries); logit < 0 -> logit * alpha,
    else logit / alpha."""
    out = logits.copy()
    recent = history[-window:] if window > 0 else []
    for token, count in zip(*np.unique(np.asarray(recent, dtype=np.int64), return_counts=True), strict=True):
        alpha = penalty ** int(count)
        out[token] = out[token] * alpha if out[token] < 0 else out[token] / alpha
    return out


def softmax(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    shifted = np.exp(values - finite.max())
    return shifted / shifted.sum()


def top_p_filter(values: np.ndarray, top_p: float, min_keep: int) -> np.ndarray:
    """HF TopP semantics: entries in ascending order (stable: among equal values the lower index comes first),
    cumulative softmax; the entries whose cumulative probability is <= 1 - top_p are removed, except the
    `min_keep` largest."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(softmax(values)[order])
    remove = cumulative <= 1.0 - top_p
    remove[len(values) - min_keep :] = False
    out = values.copy()
    out[order[remove]] = -np.inf
    return out


def top_k_filter(values: np.ndarray, top_k: int, min_keep: int) -> np.ndarray:
    """HF TopK semantics: k = max(top_k, min_keep); values below the k-th largest are removed (ties kept)."""
    k = min(max(top_k, min_keep), len(values))
    threshold = np.sort(values)[::-1][k - 1]
    return np.where(values < threshold, -np.inf, values)


def reference_process(
    logits: np.ndarray, history: list[int], first: bool, settings: SamplerSettings
) -> np.ndarray:
    """float64 processed logits: / temperature (skipped when <= 0); unless `first`: repetition penalty,
    TopP, TopK (removed entries -inf)."""
    values = np.asarray(logits, dtype=np.float64).copy()
    if settings.temperature > 0:
        values = values / settings.temperature
    if first:
        return values
    values = repetition_penalty(values, history, settings.repetition_penalty, settings.penalty_window)
    values = top_p_filter(values, settings.top_p, settings.min_keep)
    return top_k_filter(values, settings.top_k, settings.min_keep)


def cumulative_probabilities(processed: np.ndarray) -> np.ndarray:
    return np.cumsum(softmax(np.asarray(processed, dtype=np.float64)))


def reference_choose(processed: np.ndarray, u: float) -> int:
    """The smallest index whose cumulative probability (index order) exceeds u; else the last index with
    probability > 0."""
    probabilities = softmax(np.asarray(processed, dtype=np.float64))
    above = np.nonzero(np.cumsum(probabilities) > u)[0]
    if above.size:
        return int(above[0])
    return int(np.nonzero(probabilities > 0)[0][-1])

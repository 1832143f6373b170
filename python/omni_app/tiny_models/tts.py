"""Random-weight stand-ins for `tts/MiniCPM-o-4_5-tts-F16.gguf` (the speech-token LM: a llama backbone plus
the MiniCPM TTS heads) and `tts/MiniCPM-o-4_5-projector-F16.gguf` (model-files.md §6/§7; tiny dims of
§9.2/§9.3).

`random_weights` draws the parameters in the HF layout of `MiniCPMTTS` (PyTorch names without the `tts.`
prefix; `head_code` as its weight-norm pair g, v); `gguf_tensors` applies the converter's transformations:
q/k rows permuted per head for ggml's interleaved rope, `token_embd` zero-extended to the vocabulary size,
weight norm folded (W = g·v / max(||v||, 1e-8) per code) and `head_code` stored transposed.

Every drawn value has F16 precision (the folded `head_code` is computed from such values in float64 and
stored as F32). Dtype "f16" (the default) follows the release: backbone matrices and the `projector_spk`
matrices F16, everything else F32; dtype "f32" stores those matrices in F32 with the same values (exact parity
runs). The projector file always holds F32 copies of `projector_semantic`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.llm import TINY_DEMO_KEY, add_tokenizer_metadata
from omni_app.tiny_models.tokenizer import VOCAB_SIZE

TTS_FILE = Path("tts/MiniCPM-o-4_5-tts-F16.gguf")
PROJECTOR_FILE = Path("tts/MiniCPM-o-4_5-projector-F16.gguf")
ARCH = "llama"
PROJECTOR_ARCH = "projector"
HF_EMBED_ROWS = 32000  # LlamaConfig's default vocabulary: rows of the (unused) backbone embedding
WEIGHT_NORM_EPS = 1e-8

# Sigmas chosen for the tiny model (E = 64, 2 layers): q/k large enough that attention is far from uniform
# (positions and the rope layout change the output clearly), the code head's gains such that the logits
# spread over a few units (sampling keeps tens of codes, greedy argmaxes have clear margins).
MATRIX_SIGMA = 0.05
QK_SIGMA = 0.15
NORM_SIGMA = 0.05
BIAS_SIGMA = 0.02
EMBEDDING_SIGMA = 0.15
HEAD_GAIN = 2.5
HEAD_GAIN_SIGMA = 0.1
# With every code's gain alike the EOS code is hardly ever among the top codes and every chunk runs to the
# 500-code limit; a larger EOS gain spreads its logit, so that chunks end like real speech does: measured
# median 55 codes (default sampler) and 49 (greedy) per 10-token chunk over 30 random chunks (F32 file).
EOS_GAIN_FACTOR = 2.2
# Separate stream from the LLM (default_rng(seed)) and audio writers.
_RNG_STREAM = 0x7755


@dataclass(frozen=True)
class TtsDims:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_ff: int = 128
    n_ctx: int = 4096
    rope_base: float = 10000.0
    eps: float = 1e-6
    n_llm_embd: int = 128  # input of the projectors = LLM hidden size
    n_text: int = 152064  # emb_text rows: indexed by LLM token ids (TTS ids 151687/151692 included)
    n_codes: int = 6562  # 6561 speech codes + EOS
    n_vocab: int = VOCAB_SIZE  # llama.vocab_size and token_embd rows (the tokenizer length)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


TINY_TTS_DIMS = TtsDims(n_embd=64, n_layer=2, n_head=2, n_ff=128, n_llm_embd=128)
FULL_TTS_DIMS = TtsDims(n_embd=768, n_layer=20, n_head=12, n_ff=3072, n_llm_embd=4096)

_FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
_MATRIX_DTYPES = {"f16": np.float16, "f32": np.float32}


def _hf_shapes(dims: TtsDims) -> dict[str, tuple[tuple[int, ...], str]]:
    """HF parameter name -> (shape, init kind), in the order the GGUF file lists the tensors."""
    e, f, h = dims.n_embd, dims.n_ff, dims.n_llm_embd
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        "model.embed_tokens.weight": ((min(HF_EMBED_ROWS, dims.n_vocab), e), "matrix")
    }
    for layer in range(dims.n_layer):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.input_layernorm.weight": ((e,), "norm"),
            f"{prefix}.self_attn.q_proj.weight": ((e, e), "qk"),
            f"{prefix}.self_attn.k_proj.weight": ((e, e), "qk"),
            f"{prefix}.self_attn.v_proj.weight": ((e, e), "matrix"),
            f"{prefix}.self_attn.o_proj.weight": ((e, e), "matrix"),
            f"{prefix}.post_attention_layernorm.weight": ((e,), "norm"),
            f"{prefix}.mlp.gate_proj.weight": ((f, e), "matrix"),
            f"{prefix}.mlp.up_proj.weight": ((f, e), "matrix"),
            f"{prefix}.mlp.down_proj.weight": ((e, f), "matrix"),
        }
    shapes |= {
        "model.norm.weight": ((e,), "norm"),
        "emb_text.weight": ((dims.n_text, e), "embedding"),
        "emb_code.0.weight": ((dims.n_codes, e), "embedding"),
        "head_code.0.parametrizations.weight.original0": ((dims.n_codes, 1), "gain"),
        "head_code.0.parametrizations.weight.original1": ((dims.n_codes, e), "matrix"),
    }
    for projector in ("projector_semantic", "projector_spk"):
        shapes |= {
            f"{projector}.linear1.weight": ((e, h), "matrix"),
            f"{projector}.linear1.bias": ((e,), "bias"),
            f"{projector}.linear2.weight": ((e, e), "matrix"),
            f"{projector}.linear2.bias": ((e,), "bias"),
        }
    return shapes


def _draw(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    sigma = {
        "matrix": MATRIX_SIGMA,
        "qk": QK_SIGMA,
        "norm": NORM_SIGMA,
        "bias": BIAS_SIGMA,
        "embedding": EMBEDDING_SIGMA,
        "gain": HEAD_GAIN * HEAD_GAIN_SIGMA,
    }[kind]
    values = sigma * rng.standard_normal(shape, dtype=np.float32)
    values += {"norm": 1.0, "gain": HEAD_GAIN}.get(kind, 0.0)
    return values


def random_weights(
    seed: int, dims: TtsDims = TINY_TTS_DIMS, dtype: str = "f16", names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Seeded HF-layout parameters (name -> float32 array of F16 precision), all of them or only `names`.
    Each tensor has its own random stream (seed, stream, index in the file order), so a subset has the same
    values as in the full set. `dtype` is only validated here: the values never depend on it."""
    if dtype not in _FILE_TYPES:
        raise ValueError(f"unsupported TTS dtype {dtype!r}; expected one of {sorted(_FILE_TYPES)}")
    shapes = _hf_shapes(dims)
    wanted = set(shapes if names is None else names)
    weights = {}
    for index, (name, (shape, kind)) in enumerate(shapes.items()):
        if name in wanted:
            rng = np.random.default_rng([seed, _RNG_STREAM, index])
            values = _draw(rng, shape, kind)
            if kind == "gain":
                values[dims.n_codes - 1] *= EOS_GAIN_FACTOR
            weights[name] = values.astype(np.float16).astype(np.float32)
    return weights


def permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """HF q/k projection (n_head * D, E) in the rotate-half convention -> the file's layout for ggml's
    interleaved-pair rope: within each head, rows [0, D/2) and [D/2, D) interleaved (row 2i = HF row i,
    row 2i + 1 = HF row i + D/2)."""
    rows, cols = weight.shape
    head_dim = rows // n_head
    return weight.reshape(n_head, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def fold_weight_norm(gain: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """W = g · v / max(||v||, 1e-8), the norm taken per output row (over the inputs); float32 (codes, E)."""
    norms = np.linalg.norm(direction.astype(np.float64), axis=1, keepdims=True)
    return (gain * direction / np.maximum(norms, WEIGHT_NORM_EPS)).astype(np.float32)


def _backbone_tensors(hf: dict[str, np.ndarray], dims: TtsDims, matrix_dtype: type) -> dict[str, np.ndarray]:
    embed = hf["model.embed_tokens.weight"]
    token_embd = np.zeros((dims.n_vocab, dims.n_embd), dtype=matrix_dtype)
    token_embd[: embed.shape[0]] = embed
    tensors = {"token_embd.weight": token_embd}
    for layer in range(dims.n_layer):
        src, dst = f"model.layers.{layer}", f"blk.{layer}"
        tensors |= {
            f"{dst}.attn_norm.weight": hf[f"{src}.input_layernorm.weight"],
            f"{dst}.attn_q.weight": permute_for_rope(hf[f"{src}.self_attn.q_proj.weight"], dims.n_head),
            f"{dst}.attn_k.weight": permute_for_rope(hf[f"{src}.self_attn.k_proj.weight"], dims.n_head),
            f"{dst}.attn_v.weight": hf[f"{src}.self_attn.v_proj.weight"],
            f"{dst}.attn_output.weight": hf[f"{src}.self_attn.o_proj.weight"],
            f"{dst}.ffn_norm.weight": hf[f"{src}.post_attention_layernorm.weight"],
            f"{dst}.ffn_gate.weight": hf[f"{src}.mlp.gate_proj.weight"],
            f"{dst}.ffn_up.weight": hf[f"{src}.mlp.up_proj.weight"],
            f"{dst}.ffn_down.weight": hf[f"{src}.mlp.down_proj.weight"],
        }
    tensors["output_norm.weight"] = hf["model.norm.weight"]
    return {
        name: array.astype(matrix_dtype if array.ndim == 2 else np.float32) for name, array in tensors.items()
    }


def gguf_tensors(hf: dict[str, np.ndarray], dims: TtsDims, dtype: str = "f16") -> dict[str, np.ndarray]:
    """The TTS file's tensors (numpy order = GGUF ne reversed) from HF-layout parameters, in file order."""
    matrix_dtype = _MATRIX_DTYPES[dtype]
    tensors = _backbone_tensors(hf, dims, matrix_dtype)
    weight_norm = "head_code.0.parametrizations.weight"
    head = fold_weight_norm(hf[f"{weight_norm}.original0"], hf[f"{weight_norm}.original1"])
    tensors |= {
        "emb_text.weight": hf["emb_text.weight"],
        "emb_code.0.weight": hf["emb_code.0.weight"],
        # Transposed: numpy (E, codes) = ne (codes, E), element (code c, hidden h) at h * codes + c.
        "head_code.0.weight": np.ascontiguousarray(head.T),
    }
    for part in ("linear1", "linear2"):
        tensors[f"projector_semantic.{part}.weight"] = hf[f"projector_semantic.{part}.weight"]
        tensors[f"projector_semantic.{part}.bias"] = hf[f"projector_semantic.{part}.bias"]
    for part in ("linear1", "linear2"):
        tensors[f"projector_spk.{part}.weight"] = hf[f"projector_spk.{part}.weight"].astype(matrix_dtype)
        tensors[f"projector_spk.{part}.bias"] = hf[f"projector_spk.{part}.bias"]
    return {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def projector_tensors(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The projector file's four F32 tensors: `projector_semantic` without its prefix."""
    return {
        f"{part}.{param}": hf[f"projector_semantic.{part}.{param}"].astype(np.float32)
        for part in ("linear1", "linear2")
        for param in ("weight", "bias")
    }


def _parameter_count(tensors: dict[str, np.ndarray]) -> int:
    return sum(array.size for array in tensors.values())


def _add_metadata(
    writer: gguf.GGUFWriter, dims: TtsDims, dtype: str, tiny_demo: bool, size_label: str
) -> None:
    """The keys of model-files.md §6.2 / §9.3 with their exact types (architecture added by the writer)."""
    writer.add_string("general.type", "model")
    kind = "tiny random-weight" if tiny_demo else "random-weight"
    writer.add_string("general.name", f"MiniCPM-o 4.5 TTS ({kind})")
    writer.add_string("general.size_label", size_label)
    writer.add_uint32("general.file_type", int(_FILE_TYPES[dtype]))
    writer.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)
    if tiny_demo:
        writer.add_bool(TINY_DEMO_KEY, True)
    writer.add_uint32(f"{ARCH}.block_count", dims.n_layer)
    writer.add_uint32(f"{ARCH}.context_length", dims.n_ctx)
    writer.add_uint32(f"{ARCH}.embedding_length", dims.n_embd)
    writer.add_uint32(f"{ARCH}.feed_forward_length", dims.n_ff)
    writer.add_uint32(f"{ARCH}.attention.head_count", dims.n_head)
    writer.add_uint32(f"{ARCH}.attention.head_count_kv", dims.n_head)
    writer.add_float32(f"{ARCH}.rope.freq_base", dims.rope_base)
    writer.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", dims.eps)
    writer.add_uint32(f"{ARCH}.rope.dimension_count", dims.head_dim)
    writer.add_uint32(f"{ARCH}.vocab_size", dims.n_vocab)


def write_tts(
    path: Path, seed: int = 0, dtype: str = "f16", dims: TtsDims = TINY_TTS_DIMS, tiny_demo: bool = True
) -> Path:
    """Write the TTS GGUF to `path` (parent directories created; same arguments -> same bytes)."""
    tensors = gguf_tensors(random_weights(seed, dims, dtype), dims, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, ARCH)
    size_label = gguf.size_label(_parameter_count(tensors), 0, 0, 0)
    _add_metadata(writer, dims, dtype, tiny_demo, size_label)
    add_tokenizer_metadata(writer)
    write_tensors_and_close(writer, tensors)
    return path


def write_tts_projector(path: Path, seed: int = 0, dims: TtsDims = TINY_TTS_DIMS) -> Path:
    """Write the projector GGUF (the TTS file's `projector_semantic` values, F32, one key) to `path`."""
    semantic = [name for name in _hf_shapes(dims) if name.startswith("projector_semantic.")]
    tensors = projector_tensors(random_weights(seed, dims, names=semantic))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, PROJECTOR_ARCH)
    write_tensors_and_close(writer, tensors)
    return path

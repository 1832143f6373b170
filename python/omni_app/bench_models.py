"""Full-size random-weight model files for benchmarks (the LLM, the vision and audio encoders, the TTS,
Token2Wav).

Speed does not depend on weight values, so the quantized blocks are a short random pattern repeated over each
tensor (valid, small scales; no NaN or inf). Writing is bound by the disk: a Q4_K_M file of the real shape is
about 5 GB. The tokenizer is the tiny-model one (real vocabulary size, special tokens at their real ids).
The vision encoder (about 1.0 GB: F16 matrices, 27 ViT layers), the audio encoder (about 0.6 GB of F16) and
the TTS (about 1.1 GB: F16 backbone, F32 heads) plus its projector (15 MB of F32) are written by the
tiny-model writers with the real dimensions, and so are the five Token2Wav files of token2wav-gguf/ (about
0.77 GB of F32: encoder, DiT, flow extras, HiFT vocoder, a 48-frame prompt cache; writing them takes about 5 s
on 2 cores).

    python -m omni_app.bench_models DIR [--quant Q4_K_M|Q8_0] [--n-layer 36]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np

from omni_app.tiny_models.audio import FULL_AUDIO_DIMS, write_audio
from omni_app.tiny_models.llm import LlmDims, add_model_metadata, add_tokenizer_metadata
from omni_app.tiny_models.token2wav import FULL_TOKEN2WAV_DIMS, write_token2wav
from omni_app.tiny_models.tts import FULL_TTS_DIMS, PROJECTOR_FILE, TTS_FILE, write_tts, write_tts_projector
from omni_app.tiny_models.vision import FULL_VISION_DIMS, VISION_FILE, write_vision

QuantType = gguf.GGMLQuantizationType
QUANT_CHOICES = ("Q4_K_M", "Q8_0")
FILE_TYPES = {"Q4_K_M": gguf.LlamaFileType.MOSTLY_Q4_K_M, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
PATTERN_BLOCKS = 4099  # prime, so rows of a tensor do not repeat the same bytes


# The MiniCPM-o 4.5 LLM (Qwen3-8B layout, model-files.md §3); n_layer can be cut for quick tests.
FULL_SIZE_DIMS = LlmDims(n_embd=4096, n_layer=36, n_head=32, n_head_kv=8, head_dim=128, n_ff=12288)


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, columns); columns are the contiguous ggml ne0
    qtype: QuantType

    @property
    def nbytes(self) -> int:
        if self.qtype == QuantType.F32:
            return int(np.prod(self.shape)) * 4
        block_values, block_bytes = gguf.GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block_values * block_bytes


def llm_file_name(quant: str) -> str:
    return f"MiniCPM-o-4_5-{quant}.gguf"


def _wants_more_bits(layer: int, n_layer: int) -> bool:
    """Layers that a Q4_K_M mix keeps at Q6_K for attn_v and ffn_down (first and last eighth, every third)."""
    eighth = n_layer // 8
    return layer < eighth or layer >= n_layer - eighth or (layer - eighth) % 3 == 2


def _matrix_type(quant: str, role: str, layer: int, n_layer: int) -> QuantType:
    if quant == "Q8_0":
        return QuantType.Q8_0
    if role == "output":
        return QuantType.Q6_K
    if role in ("attn_v", "ffn_down") and _wants_more_bits(layer, n_layer):
        return QuantType.Q6_K
    return QuantType.Q4_K


def tensor_plan(shape: LlmDims, n_vocab: int, quant: str) -> list[TensorPlan]:
    """Every tensor of the qwen3 LLM file (model-files.md §3.3), with the quant mix of `quant`."""
    e, q_dim, kv_dim = shape.n_embd, shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    f32 = QuantType.F32
    plan = [
        TensorPlan("token_embd.weight", (n_vocab, e), _matrix_type(quant, "token_embd", 0, shape.n_layer)),
        TensorPlan("output_norm.weight", (e,), f32),
        TensorPlan("output.weight", (n_vocab, e), _matrix_type(quant, "output", 0, shape.n_layer)),
    ]
    for i in range(shape.n_layer):
        matrices = {
            "attn_q": (q_dim, e),
            "attn_k": (kv_dim, e),
            "attn_v": (kv_dim, e),
            "attn_output": (e, q_dim),
            "ffn_gate": (shape.n_ff, e),
            "ffn_up": (shape.n_ff, e),
            "ffn_down": (e, shape.n_ff),
        }
        plan.append(TensorPlan(f"blk.{i}.attn_norm.weight", (e,), f32))
        plan.append(TensorPlan(f"blk.{i}.attn_q_norm.weight", (shape.head_dim,), f32))
        plan.append(TensorPlan(f"blk.{i}.attn_k_norm.weight", (shape.head_dim,), f32))
        plan.append(TensorPlan(f"blk.{i}.ffn_norm.weight", (e,), f32))
        for role, dims in matrices.items():
            plan.append(
                TensorPlan(f"blk.{i}.{role}.weight", dims, _matrix_type(quant, role, i, shape.n_layer))
            )
    return plan


def _scale_bytes(value: float) -> np.ndarray:
    return np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)


def block_pattern(qtype: QuantType, rng: np.random.Generator) -> np.ndarray:
    """PATTERN_BLOCKS random blocks of `qtype` (uint8, (blocks, block_bytes)); weights of std about 0.02."""
    _, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(PATTERN_BLOCKS, block_bytes), dtype=np.uint8)
    if qtype == QuantType.Q8_0:  # d (f16), 32 x int8
        blocks[:, 0:2] = _scale_bytes(2.7e-4)
    elif qtype == QuantType.Q4_K:  # d, dmin (f16), 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
        blocks[:, 0:2] = _scale_bytes(1.4e-4)
        blocks[:, 2:4] = _scale_bytes(1.0e-3)
    elif qtype == QuantType.Q6_K:  # 128 + 64 bytes of 6-bit values, 16 int8 scales, d (f16) last
        blocks[:, 208:210] = _scale_bytes(1.5e-5)
    else:
        raise ValueError(f"no block pattern for {qtype.name}")
    return blocks


def tensor_bytes(plan: TensorPlan, patterns: dict[QuantType, np.ndarray]) -> np.ndarray:
    """The tensor's data: ones for norms, the repeated block pattern for matrices (uint8 byte rows)."""
    if plan.qtype == QuantType.F32:
        return np.ones(plan.shape, dtype=np.float32)
    rows, columns = plan.shape
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[plan.qtype]
    n_blocks = rows * columns // block_values
    pattern = patterns[plan.qtype]
    blocks = np.empty((n_blocks, block_bytes), dtype=np.uint8)
    for start in range(0, n_blocks, len(pattern)):
        count = min(len(pattern), n_blocks - start)
        blocks[start : start + count] = pattern[:count]
    return blocks.reshape(rows, columns // block_values * block_bytes)


def _iter_data(plan: list[TensorPlan], seed: int) -> Iterator[tuple[TensorPlan, np.ndarray]]:
    rng = np.random.default_rng(seed)
    patterns = {
        qtype: block_pattern(qtype, rng)
        for qtype in sorted({p.qtype for p in plan})
        if qtype != QuantType.F32
    }
    for item in plan:
        yield item, tensor_bytes(item, patterns)


def write_full_size_llm(
    path: Path, shape: LlmDims = FULL_SIZE_DIMS, quant: str = "Q4_K_M", seed: int = 0
) -> int:
    """Write the LLM file at `path`, streaming one tensor at a time; returns the file size in bytes."""
    if quant not in FILE_TYPES:
        raise ValueError(f"quant must be one of {QUANT_CHOICES}, not {quant!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "qwen3")
    name = "MiniCPM-o-4_5 LLM (random weights, benchmark)"
    add_model_metadata(writer, shape, int(FILE_TYPES[quant]), name, tiny_demo=False)
    add_tokenizer_metadata(writer)
    n_vocab = shape.n_vocab
    plan = tensor_plan(shape, n_vocab, quant)
    for item in plan:
        dtype = np.float32 if item.qtype == QuantType.F32 else np.uint8
        byte_shape = item.shape if item.qtype == QuantType.F32 else _byte_shape(item)
        writer.add_tensor_info(item.name, byte_shape, np.dtype(dtype), item.nbytes, raw_dtype=_raw(item))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data in _iter_data(plan, seed):
        writer.write_tensor_data(data)
    writer.close()
    return path.stat().st_size


def _byte_shape(item: TensorPlan) -> tuple[int, int]:
    rows, columns = item.shape
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[item.qtype]
    return rows, columns // block_values * block_bytes


def _raw(item: TensorPlan) -> QuantType | None:
    return None if item.qtype == QuantType.F32 else item.qtype


AUDIO_FILE = Path("audio") / "MiniCPM-o-4_5-audio-F16.gguf"


def write_full_size_model_dir(directory: Path, quant: str = "Q4_K_M", n_layer: int = 36) -> list[Path]:
    """A model directory in the official layout with the stages that have full-size writers; returns the
    files written, the LLM first."""
    llm_path = Path(directory) / llm_file_name(quant)
    write_full_size_llm(llm_path, replace(FULL_SIZE_DIMS, n_layer=n_layer), quant)
    vision_path = write_vision(Path(directory) / VISION_FILE, seed=0, dims=FULL_VISION_DIMS, tiny_demo=False)
    audio_path = write_audio(Path(directory) / AUDIO_FILE, seed=0, dims=FULL_AUDIO_DIMS, tiny_demo=False)
    tts_path = write_tts(Path(directory) / TTS_FILE, seed=0, dims=FULL_TTS_DIMS, tiny_demo=False)
    projector_path = write_tts_projector(Path(directory) / PROJECTOR_FILE, seed=0, dims=FULL_TTS_DIMS)
    token2wav_paths = write_token2wav(Path(directory), seed=0, dims=FULL_TOKEN2WAV_DIMS, tiny_demo=False)
    return [llm_path, vision_path, audio_path, tts_path, projector_path, *token2wav_paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m omni_app.bench_models", description=__doc__.split("\n")[0]
    )
    parser.add_argument("directory", type=Path, help="model directory to write (created if missing)")
    parser.add_argument("--quant", choices=QUANT_CHOICES, default="Q4_K_M")
    parser.add_argument("--n-layer", type=int, default=36, help="layers (36 = real; fewer for a quick check)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = write_full_size_model_dir(args.directory, args.quant, args.n_layer)
    seconds = time.perf_counter() - start
    size_gb = sum(path.stat().st_size for path in paths) / 1e9
    names = ", ".join(str(path) for path in paths)
    print(f"wrote {names} ({size_gb:.2f} GB) in {seconds:.1f} s ({size_gb / seconds:.2f} GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

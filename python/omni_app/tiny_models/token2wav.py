"""Random-weight stand-ins for the five Token2Wav files of `token2wav-gguf/` (model-files.md §8, tiny dims of
§9.2/§9.3 = the validated tiny configuration of token2wav.md §8.2).

- `encoder.gguf`: `UpsampleConformerEncoderV2` (PyTorch `flow.encoder.*` without the prefix),
- `flow_matching.gguf`: the DiT velocity estimator (`flow.decoder.estimator.*` without `decoder.`),
- `flow_extra.gguf`: `input_embedding`, `spk_embed_affine_layer`, `encoder_proj` (`flow.*`),
- `hifigan2.gguf`: the non-causal HiFT vocoder with weight norm folded to plain `.weight` tensors,
- `prompt_cache.gguf`: the speaker vector and the four flow stream caches after `setup_cache` (§6).

Tensor names are the PyTorch state-dict names of stepaudio2-minicpmo 0.1.1 built with the §8.2 constructor
arguments; numpy shapes are the PyTorch shapes (GGUF ne reversed) except for the prompt cache, whose ggml
layouts are those of model-files.md §8.6. Everything is F32. Values follow token2wav.md §8.2's fixes, so a
PyTorch reference loaded with these weights computes something non-trivial: every parameter N(0, 0.05²),
LayerNorm weights 1 + N(0, 0.05²) (the DiT adaLN and final layers are NOT zero), Snake α = 1 + U(0, 0.1),
and the F0 classifier bias at 200 Hz so that every frame is voiced. One exception to the small normals: the F0
predictor's convolutions are scaled by 1/sqrt(fan-in) and its classifier weights are N(0, 5²), so that the
pitch follows the mel (176-216 Hz on a random log-mel; with 0.05 everywhere it would be 200 Hz ± 0.01, and a
wrong F0 predictor would go unnoticed in a parity test). To load `hifigan2.gguf` into the weight-normed
PyTorch HiFT, set g = ||W|| over all dimensions but dim 0 (the input channel for ConvTranspose1d) and v = W.

The prompt cache's contents are derived data (K/V and conv states of a `setup_cache` run); here they are
random values of the right shapes (N(0, 0.5²); the speaker vector N(0, 1)), with the token-rate conformer
layers packed as [c ; c] along time like the real ones. Enough for loaders and streaming tests; a parity
harness makes its own cache with the PyTorch `setup_cache` and converts it to these layouts.

The four weight files carry no key the reference loaders read (model-files.md §8.1), and the reference prompt
cache writer sets no `general.architecture`, so none of the five files has one; each carries the tiny-demo
marker `omni_app.tiny_demo = true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.llm import TINY_DEMO_KEY

TOKEN2WAV_DIR = Path("token2wav-gguf")
ENCODER_FILE = TOKEN2WAV_DIR / "encoder.gguf"
FLOW_MATCHING_FILE = TOKEN2WAV_DIR / "flow_matching.gguf"
FLOW_EXTRA_FILE = TOKEN2WAV_DIR / "flow_extra.gguf"
HIFIGAN_FILE = TOKEN2WAV_DIR / "hifigan2.gguf"
PROMPT_CACHE_FILE = TOKEN2WAV_DIR / "prompt_cache.gguf"

N_MELS = 80  # interface sizes kept real in the tiny files (model-files.md §2)
N_SPEECH_CODES = 6561
SPK_DIM = 192

PROMPT_CACHE_PREFIX = "prompt_cache."
PROMPT_CACHE_KEY_PREFIX = "mtmd.prompt_cache."
PROMPT_CACHE_VERSION = 2
CHUNK_MAIN = 25  # new tokens per streaming window
UP_RATE = 2  # mel frames per token
N_CFG_ROWS = 2  # conditional and unconditional row of the CFG batch

WEIGHT_SIGMA = 0.05
SNAKE_ALPHA_SPREAD = 0.1
F0_BIAS_HZ = 200.0  # |classifier| is the pitch in Hz: a bias far above the 10 Hz voicing threshold
F0_CLASSIFIER_SIGMA = 5.0  # Hz per unit of the last F0 hidden layer (whose values are O(1))
CACHE_SIGMA = 0.5
_SIGMAS = {
    "weight": WEIGHT_SIGMA,
    "norm": WEIGHT_SIGMA,
    "f0_classifier": F0_CLASSIFIER_SIGMA,
    "spk": 1.0,
    "cache": CACHE_SIGMA,
    "conformer_cache": CACHE_SIGMA,
}
# One stream per file (the other writers use their own streams).
_RNG_STREAM = 0x7277
_FILE_STREAMS = {"encoder": 1, "flow_matching": 2, "flow_extra": 3, "hifigan": 4, "prompt_cache": 5}


@dataclass(frozen=True)
class EncoderDims:
    """`UpsampleConformerEncoderV2` (input size = output size = `width`)."""

    width: int = 64
    n_blocks: int = 2  # conformer layers at token rate
    n_up_blocks: int = 2  # conformer layers at mel rate
    n_heads: int = 4
    n_units: int = 128  # feed-forward hidden size
    pre_lookahead: int = 3  # conv1 kernel = pre_lookahead + 1
    up_stride: int = 2  # up conv kernel = 2 * stride + 1

    @property
    def head_dim(self) -> int:
        return self.width // self.n_heads

    @property
    def n_layers(self) -> int:
        return self.n_blocks + self.n_up_blocks

    @property
    def cnn_cache_frames(self) -> int:
        """Pre-lookahead conv2 context (kernel 3 - 1) plus the up conv context (2 * stride)."""
        return 2 + 2 * self.up_stride


@dataclass(frozen=True)
class DitDims:
    """The DiT velocity estimator; its input is x, mu, spk and cond (4 x 80 mel channels)."""

    hidden: int = 64
    depth: int = 2
    n_heads: int = 4
    head_dim: int = 16
    mlp_hidden: int = 128  # hidden * mlp_ratio
    time_embd: int = 256  # sinusoidal timestep embedding size

    @property
    def attn_width(self) -> int:
        return self.n_heads * self.head_dim


@dataclass(frozen=True)
class HiftDims:
    """The non-causal HiFT vocoder (constructor defaults except the channel counts)."""

    base_channels: int = 32
    f0_channels: int = 16  # ConvRNNF0Predictor cond_channels
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernels: tuple[int, ...] = (16, 11, 7)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    source_resblock_kernels: tuple[int, ...] = (7, 7, 11)
    n_harmonics: int = 8
    istft_n_fft: int = 16
    conv_kernel: int = 7  # conv_pre and conv_post
    f0_kernel: int = 3
    f0_layers: int = 5

    def stage_channels(self, stage: int) -> int:
        return self.base_channels // 2 ** (stage + 1)

    @property
    def spectrum_channels(self) -> int:
        """Real and imaginary parts of n_fft / 2 + 1 bins."""
        return self.istft_n_fft + 2


@dataclass(frozen=True)
class PromptCacheDims:
    # 10 ODE steps: the step count of stepaudio2's Token2wav (the parity reference) and of PyTorch simplex,
    # and the value the shipped cache was built with per the reference's side branch (token2wav.md §3.6);
    # the engine takes NT from this file.
    n_timesteps: int = 10
    # Prompt mel frames: 7 prompt tokens given to setup_cache, 3 of them lookahead -> 2 * 4 frames.
    n_frames: int = 8
    temperature: float = 1.0


@dataclass(frozen=True)
class Token2WavDims:
    encoder: EncoderDims = field(default_factory=EncoderDims)
    dit: DitDims = field(default_factory=DitDims)
    hift: HiftDims = field(default_factory=HiftDims)
    prompt: PromptCacheDims = field(default_factory=PromptCacheDims)


TINY_TOKEN2WAV_DIMS = Token2WavDims()
# The real model (token2wav.md §4, model-files.md §8); the prompt length is the ≈1 s (48 frames) that the
# README's 67 MB cache implies at NT 10 (model-files.md §8.6).
FULL_TOKEN2WAV_DIMS = Token2WavDims(
    encoder=EncoderDims(width=512, n_blocks=6, n_up_blocks=4, n_heads=8, n_units=2048),
    dit=DitDims(hidden=512, depth=16, n_heads=8, head_dim=64, mlp_hidden=2048),
    hift=HiftDims(base_channels=512, f0_channels=512),
    prompt=PromptCacheDims(n_timesteps=10, n_frames=48),
)

# name -> (numpy shape = GGUF ne reversed, init kind)
ShapeTable = dict[str, tuple[tuple[int, ...], str]]


def _linear(name: str, n_in: int, n_out: int, bias: bool = True) -> ShapeTable:
    table: ShapeTable = {f"{name}.weight": ((n_out, n_in), "weight")}
    if bias:
        table[f"{name}.bias"] = ((n_out,), "weight")
    return table


def _conv(name: str, n_in: int, n_out: int, kernel: int) -> ShapeTable:
    return {f"{name}.weight": ((n_out, n_in, kernel), "weight"), f"{name}.bias": ((n_out,), "weight")}


def _layer_norm(name: str, width: int) -> ShapeTable:
    return {f"{name}.weight": ((width,), "norm"), f"{name}.bias": ((width,), "weight")}


def _conformer_layer(prefix: str, dims: EncoderDims) -> ShapeTable:
    w, attn = dims.width, f"{prefix}.self_attn"
    table: ShapeTable = {
        f"{attn}.pos_bias_u": ((dims.n_heads, dims.head_dim), "weight"),
        f"{attn}.pos_bias_v": ((dims.n_heads, dims.head_dim), "weight"),
    }
    for part in ("linear_q", "linear_k", "linear_v", "linear_out"):
        table |= _linear(f"{attn}.{part}", w, w)
    table |= _linear(f"{attn}.linear_pos", w, w, bias=False)
    table |= _linear(f"{prefix}.feed_forward.w_1", w, dims.n_units)
    table |= _linear(f"{prefix}.feed_forward.w_2", dims.n_units, w)
    return table | _layer_norm(f"{prefix}.norm_ff", w) | _layer_norm(f"{prefix}.norm_mha", w)


def encoder_shapes(dims: EncoderDims = TINY_TOKEN2WAV_DIMS.encoder) -> ShapeTable:
    """`encoder.gguf` in state-dict order (model-files.md §8.2)."""
    w = dims.width
    table = _linear("embed.out.0", w, w) | _layer_norm("embed.out.1", w) | _layer_norm("after_norm", w)
    table |= _conv("pre_lookahead_layer.conv1", w, w, dims.pre_lookahead + 1)
    table |= _conv("pre_lookahead_layer.conv2", w, w, 3)
    for block in range(dims.n_blocks):
        table |= _conformer_layer(f"encoders.{block}", dims)
    table |= _conv("up_layer.conv", w, w, 2 * dims.up_stride + 1)
    table |= _linear("up_embed.out.0", w, w) | _layer_norm("up_embed.out.1", w)
    for block in range(dims.n_up_blocks):
        table |= _conformer_layer(f"up_encoders.{block}", dims)
    return table


def flow_matching_shapes(dims: DitDims = TINY_TOKEN2WAV_DIMS.dit) -> ShapeTable:
    """`flow_matching.gguf` in state-dict order (model-files.md §8.3); adaLN rows 9 x hidden, final 2 x."""
    h, a, est = dims.hidden, dims.attn_width, "estimator"
    table = _linear(f"{est}.t_embedder.mlp.0", dims.time_embd, h) | _linear(f"{est}.t_embedder.mlp.2", h, h)
    table |= _linear(f"{est}.in_proj", 4 * N_MELS, h)
    for block in range(dims.depth):
        prefix = f"{est}.blocks.{block}"
        for part in ("to_q", "to_k", "to_v"):
            table |= _linear(f"{prefix}.attn.{part}", h, a)
        table |= _layer_norm(f"{prefix}.attn.q_norm", dims.head_dim)
        table |= _layer_norm(f"{prefix}.attn.k_norm", dims.head_dim)
        table |= _linear(f"{prefix}.attn.proj", a, h)
        table |= _linear(f"{prefix}.mlp.fc1", h, dims.mlp_hidden) | _linear(
            f"{prefix}.mlp.fc2", dims.mlp_hidden, h
        )
        table |= _conv(f"{prefix}.conv.block.1", h, h, 3)
        table |= _layer_norm(f"{prefix}.conv.block.3", h)
        table |= _conv(f"{prefix}.conv.block.6", h, h, 3)
        table |= _linear(f"{prefix}.adaLN_modulation.1", h, 9 * h)
    table |= _linear(f"{est}.final_layer.adaLN_modulation.1", h, 2 * h)
    return table | _linear(f"{est}.final_layer.linear", h, N_MELS)


def flow_extra_shapes(dims: EncoderDims = TINY_TOKEN2WAV_DIMS.encoder) -> ShapeTable:
    """`flow_extra.gguf` (model-files.md §8.4): embedding width = encoder input, projection from the encoder
    output (the same width)."""
    table: ShapeTable = {"input_embedding.weight": ((N_SPEECH_CODES, dims.width), "weight")}
    return (
        table
        | _linear("spk_embed_affine_layer", SPK_DIM, N_MELS)
        | _linear("encoder_proj", dims.width, N_MELS)
    )


def _resblock(prefix: str, channels: int, kernel: int) -> ShapeTable:
    table: ShapeTable = {}
    for convs in ("convs1", "convs2"):
        for j in range(3):
            table |= _conv(f"{prefix}.{convs}.{j}", channels, channels, kernel)
    for activations in ("activations1", "activations2"):
        for j in range(3):
            table[f"{prefix}.{activations}.{j}.alpha"] = ((channels,), "snake")
    return table


def hifigan_shapes(dims: HiftDims = TINY_TOKEN2WAV_DIMS.hift) -> ShapeTable:
    """`hifigan2.gguf` (model-files.md §8.5). ConvTranspose1d weights are (in, out, k) in PyTorch."""
    n_stages = len(dims.upsample_rates)
    table = _linear("m_source.l_linear", dims.n_harmonics + 1, 1)
    table |= _conv("conv_pre", N_MELS, dims.base_channels, dims.conv_kernel)
    for stage, kernel in enumerate(dims.upsample_kernels):
        c_in, c_out = dims.stage_channels(stage - 1), dims.stage_channels(stage)
        table |= {
            f"ups.{stage}.weight": ((c_in, c_out, kernel), "weight"),
            f"ups.{stage}.bias": ((c_out,), "weight"),
        }
    for stage in range(n_stages):
        rate = int(np.prod(dims.upsample_rates[stage + 1 :]))
        kernel = 2 * rate if rate > 1 else 1
        table |= _conv(f"source_downs.{stage}", dims.spectrum_channels, dims.stage_channels(stage), kernel)
    for stage, kernel in enumerate(dims.source_resblock_kernels):
        table |= _resblock(f"source_resblocks.{stage}", dims.stage_channels(stage), kernel)
    for stage in range(n_stages):
        for j, kernel in enumerate(dims.resblock_kernels):
            index = stage * len(dims.resblock_kernels) + j
            table |= _resblock(f"resblocks.{index}", dims.stage_channels(stage), kernel)
    last = dims.stage_channels(n_stages - 1)
    table |= _conv("conv_post", last, dims.spectrum_channels, dims.conv_kernel)
    for layer in range(dims.f0_layers):
        name, n_in = f"f0_predictor.condnet.{2 * layer}", N_MELS if layer == 0 else dims.f0_channels
        table[f"{name}.weight"] = ((dims.f0_channels, n_in, dims.f0_kernel), "f0_conv")
        table[f"{name}.bias"] = ((dims.f0_channels,), "weight")
    table["f0_predictor.classifier.weight"] = ((1, dims.f0_channels), "f0_classifier")
    table["f0_predictor.classifier.bias"] = ((1,), "f0_bias")
    return table


def prompt_cache_shapes(dims: Token2WavDims = TINY_TOKEN2WAV_DIMS) -> ShapeTable:
    """`prompt_cache.gguf` tensors in the ggml layouts of model-files.md §8.6 (numpy shape = ne reversed):
    conformer K/V [2 * head_dim, T, heads, layers]; estimator conv state [2 * hidden, 2, depth * NT, rows];
    estimator K/V [2 * head_dim, T, heads * depth * NT, rows] (slot = step * depth + block)."""
    enc, dit, prompt = dims.encoder, dims.dit, dims.prompt
    slots = dit.depth * prompt.n_timesteps
    frames = prompt.n_frames
    p = PROMPT_CACHE_PREFIX
    return {
        f"{p}spk_cb": ((SPK_DIM,), "spk"),
        f"{p}conformer_cnn_cache": ((1, enc.cnn_cache_frames, enc.width), "cache"),
        f"{p}conformer_att_cache": ((enc.n_layers, enc.n_heads, frames, 2 * enc.head_dim), "conformer_cache"),
        f"{p}estimator_cnn_cache": ((N_CFG_ROWS, slots, 2, 2 * dit.hidden), "cache"),
        f"{p}estimator_att_cache": ((N_CFG_ROWS, slots * dit.n_heads, frames, 2 * dit.head_dim), "cache"),
    }


def _draw(rng: np.random.Generator, shape: tuple[int, ...], kind: str, n_token_layers: int) -> np.ndarray:
    if kind == "snake":
        return (1.0 + SNAKE_ALPHA_SPREAD * rng.random(shape, dtype=np.float32)).astype(np.float32)
    if kind == "f0_bias":
        return np.full(shape, F0_BIAS_HZ, dtype=np.float32)
    if kind == "f0_conv":
        sigma = 1.0 / float(np.sqrt(np.prod(shape[1:])))  # fan-in scaling keeps the F0 hidden values O(1)
    else:
        sigma = _SIGMAS[kind]
    values = sigma * rng.standard_normal(shape, dtype=np.float32)
    if kind == "norm":
        values += 1.0
    if kind == "conformer_cache":  # token-rate layers hold their cache twice along time: [c ; c]
        half = shape[2] // 2
        values[:n_token_layers, :, half:] = values[:n_token_layers, :, :half]
    return values


def random_tensors(
    table: ShapeTable, seed: int, file_key: str, n_token_layers: int = 0
) -> dict[str, np.ndarray]:
    """Seeded F32 values for `table`, drawn in table order from the file's own stream."""
    rng = np.random.default_rng([seed, _RNG_STREAM, _FILE_STREAMS[file_key]])
    return {name: _draw(rng, shape, kind, n_token_layers) for name, (shape, kind) in table.items()}


def _open_writer(path: Path, tiny_demo: bool = True) -> gguf.GGUFWriter:
    """A writer for a file without `general.architecture` (gguf-py always adds it), with the demo marker
    unless `tiny_demo` is false (full-size bench files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "")
    writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
    if tiny_demo:
        writer.add_bool(TINY_DEMO_KEY, True)
    return writer


def _write_weights(path: Path, table: ShapeTable, seed: int, file_key: str, tiny_demo: bool = True) -> Path:
    path = Path(path)
    writer = _open_writer(path, tiny_demo)
    write_tensors_and_close(writer, random_tensors(table, seed, file_key))
    return path


def write_encoder(
    path: Path, seed: int = 0, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS, tiny_demo: bool = True
) -> Path:
    return _write_weights(path, encoder_shapes(dims.encoder), seed, "encoder", tiny_demo)


def write_flow_matching(
    path: Path, seed: int = 0, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS, tiny_demo: bool = True
) -> Path:
    return _write_weights(path, flow_matching_shapes(dims.dit), seed, "flow_matching", tiny_demo)


def write_flow_extra(
    path: Path, seed: int = 0, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS, tiny_demo: bool = True
) -> Path:
    return _write_weights(path, flow_extra_shapes(dims.encoder), seed, "flow_extra", tiny_demo)


def write_hifigan(
    path: Path, seed: int = 0, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS, tiny_demo: bool = True
) -> Path:
    return _write_weights(path, hifigan_shapes(dims.hift), seed, "hifigan", tiny_demo)


def write_prompt_cache(
    path: Path, seed: int = 0, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS, tiny_demo: bool = True
) -> Path:
    """The keys of model-files.md §8.6 with their exact types, then the five cache tensors."""
    path = Path(path)
    writer = _open_writer(path, tiny_demo)
    k, enc = PROMPT_CACHE_KEY_PREFIX, dims.encoder
    writer.add_int32(f"{k}version", PROMPT_CACHE_VERSION)
    writer.add_int32(f"{k}n_timesteps", dims.prompt.n_timesteps)
    writer.add_float32(f"{k}temperature", dims.prompt.temperature)
    writer.add_int32(f"{k}pre_lookahead", enc.pre_lookahead)
    writer.add_int32(f"{k}chunk_main", CHUNK_MAIN)
    writer.add_int32(f"{k}chunk_total", CHUNK_MAIN + enc.pre_lookahead)
    writer.add_int32(f"{k}up_rate", UP_RATE)
    tensors = random_tensors(prompt_cache_shapes(dims), seed, "prompt_cache", n_token_layers=enc.n_blocks)
    write_tensors_and_close(writer, tensors)
    return path


def write_token2wav(
    out_dir: Path, seed: int = 0, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS, tiny_demo: bool = True
) -> list[Path]:
    """Write the five files under `out_dir/token2wav-gguf/`; returns their paths (same arguments -> same
    bytes). `tiny_demo=False` leaves out the demo marker (full-size bench files)."""
    out_dir = Path(out_dir)
    writers = (
        (ENCODER_FILE, write_encoder),
        (FLOW_MATCHING_FILE, write_flow_matching),
        (FLOW_EXTRA_FILE, write_flow_extra),
        (HIFIGAN_FILE, write_hifigan),
        (PROMPT_CACHE_FILE, write_prompt_cache),
    )
    return [write(out_dir / relpath, seed, dims, tiny_demo) for relpath, write in writers]

"""Random-weight stand-in for `vision/MiniCPM-o-4_5-vision-F16.gguf`: the SigLIP-style ViT plus the MiniCPM-V
perceiver resampler in the libmtmd "resampler" mmproj layout of model-files.md §4.2/§4.3 (tiny dimensions of
§9.2/§9.3 by default: 55 tensors).

Layout quirks reproduced from the release converter:
- `v.blk.{i}.ffn_down` holds the UP projection fc1 (width -> FFN) and `ffn_up` the down projection fc2;
  loaders detect this by `ffn_down.weight` ne0 == width, which is why FFN must differ from the width.
- `resampler.pos_embed_k` is the converter's 70x70 2-D sin/cos table (no loader uses it, but it is required).
- Dtype rule of the converter's F16 mode: 4-D tensors and 2-D tensors named `*.weight` F16, the rest F32
  (so `resampler.query` stays F32). dtype "f32" stores every tensor in F32 with the same values.

Every random value is rounded through F16 so that the F16 and F32 variants hold identical values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.llm import TINY_DEMO_KEY

VISION_FILE = Path("vision/MiniCPM-o-4_5-vision-F16.gguf")
ARCH = "clip"
DESCRIPTION = "image encoder for MiniCPM-V"
PROJECTOR_TYPE = "resampler"
MINICPMV_VERSION = 100045  # the value libmtmd accepts for MiniCPM-o 4.5 (model-files.md §4.5)
POSITION_GRID = 70  # bucket grid of the ViT position table and of the resampler sin/cos table
RESAMPLER_HEAD_SIZE = 128  # hard-coded in the loaders: the resampler width must be a multiple of it
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

MATRIX_SIGMA = 0.05
NORM_SIGMA = 0.05
BIAS_SIGMA = 0.05
# Larger than the matrices, comparable to the patch embeddings (std ~0.7 for pixels in [-1, 1]): a wrong
# position bucket then changes the output clearly.
POSITION_SIGMA = 0.5
# Separate stream from the LLM (default_rng(seed)), audio, TTS and Token2Wav writers.
_RNG_STREAM = 0x715

ShapeTable = dict[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class VisionDims:
    width: int = 32
    n_head: int = 2
    n_ff: int = 64
    n_layer: int = 2
    patch: int = 14
    image_size: int = 56
    n_positions: int = POSITION_GRID * POSITION_GRID
    resampler_width: int = 128  # = LLM hidden size (tiny LLM: 128)
    n_query: int = 64
    eps: float = 1e-6


TINY_VISION_DIMS = VisionDims()
# 27 layers: HF config default with the checkpoint's undropped last layer, the likelier release (§4.7).
FULL_VISION_DIMS = VisionDims(
    width=1152, n_head=16, n_ff=4304, n_layer=27, image_size=448, resampler_width=4096
)

_FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
# Init kinds: "matrix"/"bias" N(0, 0.05); "norm" 1 + N(0, 0.05); "positions" N(0, 0.5); "sincos" computed.
_KIND_SIGMA = {"matrix": MATRIX_SIGMA, "norm": NORM_SIGMA, "bias": BIAS_SIGMA, "positions": POSITION_SIGMA}


def _layer_shapes(layer: int, dims: VisionDims) -> ShapeTable:
    block, d, f = f"v.blk.{layer}", dims.width, dims.n_ff
    shapes: ShapeTable = {}
    for projection in ("attn_q", "attn_k", "attn_v", "attn_out"):
        shapes[f"{block}.{projection}.weight"] = ((d, d), "matrix")
        shapes[f"{block}.{projection}.bias"] = ((d,), "bias")
    for norm in ("ln1", "ln2"):
        shapes[f"{block}.{norm}.weight"] = ((d,), "norm")
        shapes[f"{block}.{norm}.bias"] = ((d,), "bias")
    return shapes | {
        f"{block}.ffn_down.weight": ((f, d), "matrix"),  # fc1, width -> FFN (the swap quirk)
        f"{block}.ffn_down.bias": ((f,), "bias"),
        f"{block}.ffn_up.weight": ((d, f), "matrix"),  # fc2, FFN -> width
        f"{block}.ffn_up.bias": ((d,), "bias"),
    }


def _resampler_shapes(dims: VisionDims) -> ShapeTable:
    r = dims.resampler_width
    shapes: ShapeTable = {
        "resampler.query": ((dims.n_query, r), "matrix"),
        "resampler.pos_embed_k": ((dims.n_positions, r), "sincos"),
        "resampler.proj.weight": ((r, r), "matrix"),
        "resampler.kv.weight": ((r, dims.width), "matrix"),
    }
    for projection in ("q", "k", "v", "out"):
        shapes[f"resampler.attn.{projection}.weight"] = ((r, r), "matrix")
        shapes[f"resampler.attn.{projection}.bias"] = ((r,), "bias")
    for norm in ("ln_q", "ln_kv", "ln_post"):
        shapes[f"resampler.{norm}.weight"] = ((r,), "norm")
        shapes[f"resampler.{norm}.bias"] = ((r,), "bias")
    return shapes


def vision_shapes(dims: VisionDims = TINY_VISION_DIMS) -> ShapeTable:
    """numpy shape (GGUF ne reversed) and init kind of every tensor, in file order (16·N + 23 tensors)."""
    d = dims.width
    shapes: ShapeTable = {
        "v.patch_embd.weight": ((d, 3, dims.patch, dims.patch), "matrix"),
        "v.patch_embd.bias": ((d,), "bias"),
        "v.position_embd.weight": ((dims.n_positions, d), "positions"),
    }
    for layer in range(dims.n_layer):
        shapes |= _layer_shapes(layer, dims)
    shapes |= {"v.post_ln.weight": ((d,), "norm"), "v.post_ln.bias": ((d,), "bias")}
    return shapes | _resampler_shapes(dims)


def stored_as_f16(name: str, shape: tuple[int, ...]) -> bool:
    """The converter's F16-mode rule: 4-D tensors and 2-D `*.weight` tensors F16, everything else F32."""
    return len(shape) == 4 or (len(shape) == 2 and name.endswith(".weight"))


def resampler_pos_embed(width: int, grid: int = POSITION_GRID) -> np.ndarray:
    """The 2-D sin/cos table (grid², width) float32, row r·grid + c for grid cell (row r, column c).

    Columns [0, width/2) encode the column index c, [width/2, width) the row index r; each half is
    [sin(p·ω_k) for k < width/4] followed by [cos(p·ω_k)], ω_k = 10000^(−k / (width/4)), computed in float64.
    """
    if width % 4:
        raise ValueError(f"resampler width {width} is not a multiple of 4")
    quarter = width // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def encode(coordinate: np.ndarray) -> np.ndarray:
        angles = coordinate.reshape(-1, 1).astype(np.float64) * omega
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1).astype(np.float32)


def random_weights(
    seed: int, dims: VisionDims = TINY_VISION_DIMS, dtype: str = "f16"
) -> dict[str, np.ndarray]:
    """Seeded weights in the stored dtypes (values independent of `dtype`; F16 precision except the
    computed `resampler.pos_embed_k`)."""
    if dtype not in _FILE_TYPES:
        raise ValueError(f"unsupported vision dtype {dtype!r}; expected one of {sorted(_FILE_TYPES)}")
    rng = np.random.default_rng([seed, _RNG_STREAM])
    weights: dict[str, np.ndarray] = {}
    for name, (shape, kind) in vision_shapes(dims).items():
        if kind == "sincos":
            weights[name] = resampler_pos_embed(dims.resampler_width)
            continue
        values = _KIND_SIGMA[kind] * rng.standard_normal(shape, dtype=np.float32)
        if kind == "norm":
            values += 1.0
        as_f16 = values.astype(np.float16)
        f16 = dtype == "f16" and stored_as_f16(name, shape)
        weights[name] = as_f16 if f16 else as_f16.astype(np.float32)
    return weights


def _add_metadata(writer: gguf.GGUFWriter, dims: VisionDims, dtype: str, tiny_demo: bool) -> None:
    """The 20 keys of model-files.md §4.2 in its order, with their exact types (plus the demo marker)."""
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_minicpmv_projector", True)
    writer.add_uint32("general.file_type", int(_FILE_TYPES[dtype]))
    description = f"{DESCRIPTION} (omni_app tiny random-weight stand-in)" if tiny_demo else DESCRIPTION
    writer.add_string("general.description", description)
    if tiny_demo:
        writer.add_bool(TINY_DEMO_KEY, True)
    writer.add_string("clip.projector_type", PROJECTOR_TYPE)
    writer.add_int32("clip.minicpmv_version", MINICPMV_VERSION)
    writer.add_uint32("clip.vision.image_size", dims.image_size)
    writer.add_uint32("clip.vision.patch_size", dims.patch)
    writer.add_uint32("clip.vision.embedding_length", dims.width)
    writer.add_uint32("clip.vision.feed_forward_length", dims.n_ff)
    writer.add_uint32("clip.vision.projection_dim", 0)
    writer.add_uint32("clip.vision.attention.head_count", dims.n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", dims.eps)
    writer.add_uint32("clip.vision.block_count", dims.n_layer)
    writer.add_uint32("clip.minicpmv_query_num", dims.n_query)
    for key, values in (("clip.vision.image_mean", IMAGE_MEAN), ("clip.vision.image_std", IMAGE_STD)):
        writer.add_key_value(key, list(values), gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
    writer.add_bool("clip.use_gelu", True)


def write_vision(
    path: Path,
    seed: int = 0,
    dims: VisionDims = TINY_VISION_DIMS,
    tiny_demo: bool = True,
    dtype: str = "f16",
) -> Path:
    """Write the vision GGUF to `path` (parent directories created; same arguments -> same bytes).
    `tiny_demo=False` leaves out the demo marker (full-size bench files)."""
    weights = random_weights(seed, dims, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, ARCH)
    _add_metadata(writer, dims, dtype, tiny_demo)
    write_tensors_and_close(writer, weights)
    return path

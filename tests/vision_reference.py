"""PyTorch/NumPy reference for the vision input stage (tests only; issue 6 parity groundwork).

- `slice_plan(width, height, max_slices)`: the PyTorch reference's (PY-P `MiniCPMVImageProcessor`) overview
  size, slicing decision, grid, refine size and slice size, in plain integer/float arithmetic
  (pipeline.md §5). Where the C++ reference (OMNI `vision.cpp`) differs it is marked **[DISAGREE]** below;
  `cpp_slices(...)` states the C++ slicing decision for tests that pin the difference.
- `preprocess(image, max_slices)`: the overview and the row-major slices as float32 (3, h, w) arrays,
  PIL bicubic resizes (as PY-P; the C++ reference resizes the refined image bilinearly **[DISAGREE]**),
  normalised (x / 255 - 0.5) / 0.5.
- `load_vision_reference(gguf_path, n_layers=None)`: transformers' `SiglipVisionModel` configured and filled
  from the vision GGUF (model-files.md §4), run with MiniCPM-V's bucketed position ids for any patch grid,
  followed by a `Resampler` written for the test (64 learned queries, kv projection, ln_q/ln_kv/ln_post,
  `nn.MultiheadAttention`, 2-D sin/cos key positions computed at run time, output projection).
- `encode(reference, pixels)`: (query_num, resampler width) rows for one image chunk.

Layer count (model-files.md §4.7): by default every block of the file runs (`clip.vision.block_count`), as
the GGUF loaders do; `n_layers` keeps only the first n blocks. The engine's auto rule is the PyTorch model's:
it builds the configured 27-layer ViT and drops the last layer, so a 27-layer file runs 26 layers (any other
count runs all). Parity against the engine's auto mode therefore loads a 27-layer file with `n_layers=26`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hf_reference import read_tensor
from PIL import Image
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from omni_app.config import GgufHeader, read_gguf_header

SCALE_RESOLUTION = 448
PATCH = 14
POSITION_SIDE = 70  # the ViT position table is a 70 x 70 grid of buckets (4900 rows)
RESAMPLER_HEAD_DIM = 128  # real: 32 heads x 128 for width 4096; tiny: one head for width 128
SINCOS_BASE = 10000.0
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5

# ---- slicing arithmetic (PY-P MiniCPMVImageProcessor, pipeline.md §5) ------------------------------


@dataclass(frozen=True)
class SlicePlan:
    """Sizes are (width, height); `grid` is (columns, rows). Slices are None when the image is not sliced."""

    overview: tuple[int, int]
    grid: tuple[int, int] | None
    refine: tuple[int, int] | None
    slice_size: tuple[int, int] | None

    @property
    def n_slices(self) -> int:
        return 0 if self.grid is None else self.grid[0] * self.grid[1]


def ensure_divide(length: float, unit: int) -> int:
    """Nearest multiple of `unit` (at least `unit`). Python's round(): halves go to the even multiple,
    e.g. 21 / 14 = 1.5 -> 28 but 35 / 14 = 2.5 -> 28 (a C++ std::round port would give 42 for the latter)."""
    return max(round(length / unit) * unit, unit)


def best_resize(
    width: float, height: float, scale_resolution: int, patch: int, allow_upscale: bool
) -> tuple[int, int]:
    """Area-preserving resize to about scale_resolution^2 (only when larger, unless upscaling is allowed):
    r = w / h, h' = int(S / sqrt(r)), w' = int(h' * r), each side then rounded to a multiple of the patch."""
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        ratio = width / height
        height = int(scale_resolution / math.sqrt(ratio))
        width = int(height * ratio)
    return ensure_divide(width, patch), ensure_divide(height, patch)


def slice_grid(width: int, height: int, max_slices: int, scale_resolution: int) -> tuple[int, int] | None:
    """(columns, rows) or None when the PyTorch reference does not slice.

    multiple = min(ceil(w * h / S^2), max_slices); no slicing when multiple <= 1. Candidate slice counts are
    multiple - 1, multiple, multiple + 1 without 1 and without counts above max_slices; every factorisation
    (m, n / m) with m ascending is a candidate grid, and the first one with the smallest
    |log(w / h) - log(m / (n / m))| wins (strict comparison, so ties keep the earlier grid).
    [DISAGREE] CPP slices iff (w > S or h > S) and max_slices != 0 (see `cpp_slices`); same grid rule.
    """
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)), max_slices)
    if multiple <= 1:
        return None
    counts = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and n <= max_slices]
    grids = [(m, n // m) for n in counts for m in range(1, n + 1) if n % m == 0]
    log_ratio = math.log(width / height)
    return min(grids, key=lambda grid: abs(log_ratio - math.log(grid[0] / grid[1])))


def refine_size(
    width: int, height: int, grid: tuple[int, int], scale_resolution: int, patch: int
) -> tuple[int, int]:
    """Each side rounded to a multiple of its grid count, one cell best-resized (upscaling allowed), times
    the grid: the refined image is exactly grid x cell, so every slice has the cell size."""
    columns, rows = grid
    cell_width = ensure_divide(width, columns) / columns
    cell_height = ensure_divide(height, rows) / rows
    cell = best_resize(cell_width, cell_height, scale_resolution, patch, allow_upscale=True)
    return cell[0] * columns, cell[1] * rows


def slice_plan(
    width: int, height: int, max_slices: int, scale_resolution: int = SCALE_RESOLUTION, patch: int = PATCH
) -> SlicePlan:
    """The PyTorch reference's plan. Without slicing the overview may be upscaled (small images grow to about
    S^2); with slicing the overview is only ever downscaled (CPP: the same)."""
    grid = slice_grid(width, height, max_slices, scale_resolution)
    if grid is None:
        overview = best_resize(width, height, scale_resolution, patch, allow_upscale=True)
        return SlicePlan(overview=overview, grid=None, refine=None, slice_size=None)
    overview = best_resize(width, height, scale_resolution, patch, allow_upscale=False)
    refine = refine_size(width, height, grid, scale_resolution, patch)
    cell = (refine[0] // grid[0], refine[1] // grid[1])
    return SlicePlan(overview=overview, grid=grid, refine=refine, slice_size=cell)


def cpp_slices(width: int, height: int, max_slices: int, scale_resolution: int = SCALE_RESOLUTION) -> bool:
    """[DISAGREE] row of pipeline.md §5: the C++ reference slices iff a side exceeds S and max_slices != 0
    (the PyTorch reference needs min(ceil(area / S^2), max_slices) > 1)."""
    return (width > scale_resolution or height > scale_resolution) and max_slices != 0


# ---- pixels ---------------------------------------------------------------------------------------


def normalise(image: Image.Image) -> np.ndarray:
    """RGB8 image -> float32 (3, h, w), (x / 255 - mean) / std with mean = std = 0.5."""
    scaled = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((scaled - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1))


def crop_row_major(image: Image.Image, grid: tuple[int, int]) -> list[Image.Image]:
    columns, rows = grid
    cell_width, cell_height = image.width // columns, image.height // rows
    return [
        image.crop((col * cell_width, row * cell_height, (col + 1) * cell_width, (row + 1) * cell_height))
        for row in range(rows)
        for col in range(columns)
    ]


def preprocess(
    image: Image.Image, max_slices: int, scale_resolution: int = SCALE_RESOLUTION, patch: int = PATCH
) -> list[np.ndarray]:
    """[overview, slices row-major...] as float32 (3, h, w); every resize is PIL bicubic (PY-P).
    [DISAGREE] CPP resizes the refined image bilinearly; the overview is bicubic in both."""
    rgb = image.convert("RGB")
    plan = slice_plan(rgb.width, rgb.height, max_slices, scale_resolution, patch)
    chunks = [rgb.resize(plan.overview, resample=Image.Resampling.BICUBIC)]
    if plan.grid is not None and plan.refine is not None:
        refined = rgb.resize(plan.refine, resample=Image.Resampling.BICUBIC)
        chunks.extend(crop_row_major(refined, plan.grid))
    return [normalise(chunk) for chunk in chunks]


# ---- positions ------------------------------------------------------------------------------------


def bucket_position_ids(patch_rows: int, patch_cols: int, side: int = POSITION_SIDE) -> np.ndarray:
    """int64 (patch_rows * patch_cols,) row-major ids into the 70 x 70 ViT position table:
    floor(70 * i / p_h) * 70 + floor(70 * j / p_w) (pipeline.md §5, model-files.md §4.4), exact integers."""
    bucket_rows = (side * np.arange(patch_rows)) // patch_rows
    bucket_cols = (side * np.arange(patch_cols)) // patch_cols
    return (bucket_rows[:, None] * side + bucket_cols[None, :]).reshape(-1).astype(np.int64)


def sincos_1d(positions: np.ndarray, width: int) -> np.ndarray:
    """(n, width): [sin(p * w_k) for k < width/2, then cos(p * w_k)], w_k = 10000^(-k / (width/2))."""
    half = width // 2
    frequencies = SINCOS_BASE ** (-np.arange(half, dtype=np.float64) / half)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * frequencies[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def resampler_key_positions(patch_rows: int, patch_cols: int, width: int) -> np.ndarray:
    """float32 (p_h * p_w, width) row-major 2-D sin/cos embedding of the patch grid (pipeline.md §5
    "2-D sin-cos position embedding (4096-d) of the patch grid"; model-files.md §4.4 "width ne0 of
    resampler.proj.weight"). The half-split the spec leaves implicit, as MiniCPM-V's resampler (MAE
    convention with a (w, h) meshgrid): the first width/2 columns encode the patch COLUMN j, the last width/2
    the patch ROW i, each as `sincos_1d` (sin block, then cos block) with quarter = width / 4 frequencies
    10000^(-k / quarter). Patch (i, j) -> [sin(j w), cos(j w), sin(i w), cos(i w)]. Computed in float64."""
    if width % 4 != 0:
        raise ValueError(f"resampler width {width} is not a multiple of 4")
    rows, cols = np.meshgrid(np.arange(patch_rows), np.arange(patch_cols), indexing="ij")
    by_column = sincos_1d(cols.reshape(-1), width // 2)
    by_row = sincos_1d(rows.reshape(-1), width // 2)
    return np.concatenate([by_column, by_row], axis=1).astype(np.float32)


# ---- modules --------------------------------------------------------------------------------------


class Resampler(nn.Module):
    """MiniCPM-V 2.6-style perceiver: LN(queries) attend to LN(kv(x)) + positions (keys) and LN(kv(x))
    (values); then ln_post and the output projection (an out x in Linear weight, as the GGUF stores it)."""

    def __init__(self, n_queries: int, width: int, kv_width: int, eps: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(n_queries, width))
        self.kv_proj = nn.Linear(kv_width, width, bias=False)
        self.attn = nn.MultiheadAttention(width, width // RESAMPLER_HEAD_DIM, batch_first=True)
        self.ln_q = nn.LayerNorm(width, eps=eps)
        self.ln_kv = nn.LayerNorm(width, eps=eps)
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Linear(width, width, bias=False)  # weight = HF `resampler.proj` transposed

    @property
    def width(self) -> int:
        return self.query.shape[1]

    def forward(self, states: torch.Tensor, patch_rows: int, patch_cols: int) -> torch.Tensor:
        """(L, kv_width) ViT states of a p_h x p_w grid -> (n_queries, width)."""
        values = self.ln_kv(self.kv_proj(states))
        positions = torch.from_numpy(resampler_key_positions(patch_rows, patch_cols, self.width))
        keys = values + positions.to(values.dtype)
        queries = self.ln_q(self.query)
        attended, _ = self.attn(queries[None], keys[None], values[None], need_weights=False)
        return self.proj(self.ln_post(attended[0]))


class VisionReference(nn.Module):
    """SigLIP ViT (transformers) + `Resampler`; `patch` is the ViT patch size in pixels."""

    def __init__(self, vit: SiglipVisionModel, resampler: Resampler) -> None:
        super().__init__()
        self.vit = vit
        self.resampler = resampler
        self.patch = vit.config.patch_size

    def vit_states(self, pixels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(3, h, w) -> post-LN ViT states (p_h * p_w, width) with bucketed positions, p_h, p_w."""
        height, width = pixels.shape[1:]
        if height % self.patch or width % self.patch:
            raise ValueError(f"image chunk {width}x{height} is not a multiple of the {self.patch}-px patch")
        embeddings = self.vit.embeddings
        patches = embeddings.patch_embedding(pixels[None]).flatten(2).transpose(1, 2)
        patch_rows, patch_cols = height // self.patch, width // self.patch
        ids = torch.from_numpy(bucket_position_ids(patch_rows, patch_cols))
        hidden = patches + embeddings.position_embedding(ids)[None]
        hidden = self.vit.encoder(inputs_embeds=hidden).last_hidden_state
        return self.vit.post_layernorm(hidden)[0], patch_rows, patch_cols

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        states, patch_rows, patch_cols = self.vit_states(pixels)
        return self.resampler(states, patch_rows, patch_cols)


def siglip_config(header: GgufHeader, n_layers: int) -> SiglipVisionConfig:
    patch = header.value("clip.vision.patch_size")
    position_rows = header.tensors["v.position_embd.weight"].ne[1]
    side = math.isqrt(position_rows)
    if side * side != position_rows:
        raise ValueError(f"position table has {position_rows} rows, not a square grid")
    config = SiglipVisionConfig(
        hidden_size=header.value("clip.vision.embedding_length"),
        intermediate_size=header.value("clip.vision.feed_forward_length"),
        num_hidden_layers=n_layers,
        num_attention_heads=header.value("clip.vision.attention.head_count"),
        num_channels=3,
        image_size=side * patch,  # transformers sizes the position table as (image_size / patch)^2
        patch_size=patch,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=header.value("clip.vision.attention.layer_norm_epsilon"),
        attention_dropout=0.0,
        vision_use_head=False,
    )
    config._attn_implementation = "eager"
    return config


_VIT_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_out": "self_attn.out_proj",
    "ln1": "layer_norm1",
    "ln2": "layer_norm2",
    "ffn_down": "mlp.fc1",  # converter misnaming: ffn_down holds fc1 (width -> FFN), model-files.md §4.3
    "ffn_up": "mlp.fc2",  # and ffn_up holds fc2 (FFN -> width)
}
_VIT_GLOBAL_NAMES = {
    "v.patch_embd": "embeddings.patch_embedding",
    "v.position_embd": "embeddings.position_embedding",
    "v.post_ln": "post_layernorm",
}


def vit_state_dict(header: GgufHeader, n_layers: int) -> dict[str, torch.Tensor]:
    """transformers parameter name -> tensor for the first `n_layers` blocks; GGUF ne reversed gives the
    PyTorch layouts directly (Conv2d (out, in, kh, kw), Linear (out, in), Embedding (rows, width))."""
    state = {}
    for name in header.tensors:
        if not name.startswith("v."):
            continue
        module, param = name.rsplit(".", 1)
        if module.startswith("v.blk."):
            _, _, layer, short = module.split(".", 3)
            if int(layer) >= n_layers:
                continue
            target = f"encoder.layers.{layer}.{_VIT_LAYER_NAMES[short]}.{param}"
        else:
            target = f"{_VIT_GLOBAL_NAMES[module]}.{param}"
        state[target] = torch.from_numpy(read_tensor(header, name))
    return state


def resampler_state_dict(header: GgufHeader) -> dict[str, torch.Tensor]:
    """`Resampler` parameters from the split/renamed/transposed GGUF tensors (model-files.md §4.3);
    `resampler.pos_embed_k` is deliberately not read."""

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(read_tensor(header, f"resampler.{name}"))

    return {
        "query": tensor("query"),
        "kv_proj.weight": tensor("kv.weight"),
        "attn.in_proj_weight": torch.cat([tensor(f"attn.{x}.weight") for x in "qkv"]),
        "attn.in_proj_bias": torch.cat([tensor(f"attn.{x}.bias") for x in "qkv"]),
        "attn.out_proj.weight": tensor("attn.out.weight"),
        "attn.out_proj.bias": tensor("attn.out.bias"),
        **{
            f"{ln}.{p}": tensor(f"{ln}.{p}")
            for ln in ("ln_q", "ln_kv", "ln_post")
            for p in ("weight", "bias")
        },
        "proj.weight": tensor("proj.weight"),
    }


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssertionError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")


def load_vision_reference(gguf_path: Path, n_layers: int | None = None) -> VisionReference:
    """float32 eval-mode reference holding exactly the GGUF's weights (F16 widened), with the first
    `n_layers` ViT blocks (None: all `clip.vision.block_count` of them; ValueError outside 1..block_count)."""
    header = read_gguf_header(gguf_path)
    in_file = header.value("clip.vision.block_count")
    layers = in_file if n_layers is None else n_layers
    if not 1 <= layers <= in_file:
        raise ValueError(f"n_layers must be in 1..{in_file} (the file's block_count), got {n_layers}")
    vit = SiglipVisionModel(siglip_config(header, layers))
    _load_strict(vit, vit_state_dict(header, layers))
    query_ne = header.tensors["resampler.query"].ne
    resampler = Resampler(
        n_queries=query_ne[1],
        width=query_ne[0],
        kv_width=header.value("clip.vision.embedding_length"),
        eps=header.value("clip.vision.attention.layer_norm_epsilon"),
    )
    _load_strict(resampler, resampler_state_dict(header))
    return VisionReference(vit, resampler).float().eval()


@torch.no_grad()
def encode(reference: VisionReference, pixels: np.ndarray) -> np.ndarray:
    """float32 (query_num, resampler width) LLM rows for one (3, h, w) normalised image chunk."""
    return reference(torch.as_tensor(np.asarray(pixels, dtype=np.float32))).numpy()


def encode_image(
    reference: VisionReference, image: Image.Image, max_slices: int, scale_resolution: int
) -> list[np.ndarray]:
    """Rows of every chunk of `preprocess(image)`: overview first, then the slices row-major."""
    chunks = preprocess(image, max_slices, scale_resolution, reference.patch)
    return [encode(reference, chunk) for chunk in chunks]

"""Model-directory discovery and validation (official MiniCPM-o 4.5 GGUF layout, model-files.md §1).

Discovery order: explicit `--model-dir` value, then `OMNI_MODEL_DIR`, then `<repo>/models` (or one directory
below it, e.g. `models/MiniCPM-o-4_5-gguf/`). Validation parses each present file's GGUF header with a small
reader of our own (gguf-py's `GGUFReader` takes ~7 s on the 151748-entry vocabulary; this takes ~0.1 s) and
checks the architecture, a few required keys with their exact types, and a few required tensors.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from omni_app.tiny_models import TINY_DEMO_KEY, TINY_DEMO_README
from omni_app.tiny_models.audio import AudioDims
from omni_app.tiny_models.audio import tensor_shapes as audio_tensor_shapes
from omni_app.tiny_models.token2wav import (
    PROMPT_CACHE_PREFIX,
    DitDims,
    EncoderDims,
    HiftDims,
    PromptCacheDims,
    ShapeTable,
    Token2WavDims,
    encoder_shapes,
    flow_extra_shapes,
    flow_matching_shapes,
    hifigan_shapes,
    prompt_cache_shapes,
)
from omni_app.tiny_models.vision import RESAMPLER_HEAD_SIZE, VisionDims, vision_shapes

ENV_MODEL_DIR = "OMNI_MODEL_DIR"
LLM_PREFIX = "MiniCPM-o-4_5-"
LLM_QUANT_PREFERENCE = ("Q4_K_M", "Q8_0", "F16")
_NON_LLM_NAME_PARTS = ("mmproj", "vision", "audio", "tts", "projector", "token2wav")

FileState = Literal["present", "missing", "invalid"]

# ----------------------------------------------------------------------------------------------------
# GGUF header reader
# ----------------------------------------------------------------------------------------------------

_GGUF_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class GgufFormatError(ValueError):
    """A file is not a readable GGUF file; the message names the file and what is wrong."""


@dataclass(frozen=True)
class GgufField:
    type: GGUFValueType
    value: Any  # arrays: a list
    item_type: GGUFValueType | None = None  # arrays only


@dataclass(frozen=True)
class GgufTensorInfo:
    name: str
    ne: tuple[int, ...]  # GGUF order: ne0 (contiguous) first
    ggml_type: GGMLQuantizationType
    offset: int  # absolute file offset of the data
    nbytes: int


@dataclass(frozen=True)
class GgufHeader:
    path: Path
    version: int
    fields: dict[str, GgufField]
    tensors: dict[str, GgufTensorInfo]
    file_size: int

    def value(self, key: str, default: Any = None) -> Any:
        found = self.fields.get(key)
        return default if found is None else found.value


class _Cursor:
    def __init__(self, buffer: mmap.mmap | bytes, path: Path) -> None:
        self.buffer = buffer
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buffer):
            raise GgufFormatError(f"{self.path}: truncated GGUF header (at byte {self.pos})")
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        end = self.pos + length
        if end > len(self.buffer):
            raise GgufFormatError(
                f"{self.path}: truncated GGUF header (string of {length} bytes at {self.pos})"
            )
        raw = bytes(self.buffer[self.pos : end])
        self.pos = end
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GgufFormatError(f"{self.path}: invalid UTF-8 string at byte {end - length}") from exc

    def value_type(self, context: str) -> GGUFValueType:
        raw = self.unpack("<I")
        try:
            return GGUFValueType(raw)
        except ValueError as exc:
            raise GgufFormatError(f"{self.path}: unknown value type {raw} for {context}") from exc

    def scalar_or_string(self, value_type: GGUFValueType) -> Any:
        if value_type == GGUFValueType.STRING:
            return self.string()
        return self.unpack(_SCALAR_FORMATS[value_type])


def _read_field(cursor: _Cursor, key: str) -> GgufField:
    value_type = cursor.value_type(f"key {key!r}")
    if value_type != GGUFValueType.ARRAY:
        return GgufField(value_type, cursor.scalar_or_string(value_type))
    item_type = cursor.value_type(f"items of key {key!r}")
    if item_type == GGUFValueType.ARRAY:
        raise GgufFormatError(f"{cursor.path}: nested arrays are not supported (key {key!r})")
    count = cursor.unpack("<Q")
    left = len(cursor.buffer) - cursor.pos
    if count > left:
        raise GgufFormatError(
            f"{cursor.path}: truncated GGUF header (array key {key!r} claims {count} items, "
            f"more than the {left} bytes left)"
        )
    if item_type == GGUFValueType.STRING:
        return GgufField(GGUFValueType.ARRAY, _read_string_array(cursor, count), item_type)
    item_format = _SCALAR_FORMATS[item_type][1]
    size = struct.calcsize(f"<{count}{item_format}")
    if cursor.pos + size > len(cursor.buffer):
        raise GgufFormatError(f"{cursor.path}: truncated GGUF header (array key {key!r})")
    values = list(struct.unpack_from(f"<{count}{item_format}", cursor.buffer, cursor.pos))
    cursor.pos += size
    return GgufField(GGUFValueType.ARRAY, values, item_type)


def _read_string_array(cursor: _Cursor, count: int) -> list[str]:
    # Hot loop (151748 vocabulary strings): locals only, one bounds check per item.
    buffer, pos, end_of_file = cursor.buffer, cursor.pos, len(cursor.buffer)
    unpack_length = struct.Struct("<Q").unpack_from
    values = []
    try:
        for _ in range(count):
            if pos + 8 > end_of_file:
                break
            (length,) = unpack_length(buffer, pos)
            pos += 8 + length
            if pos > end_of_file:
                break
            values.append(buffer[pos - length : pos].decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise GgufFormatError(f"{cursor.path}: invalid UTF-8 string at byte {pos}") from exc
    if len(values) != count:
        raise GgufFormatError(f"{cursor.path}: truncated GGUF header (string array at byte {cursor.pos})")
    cursor.pos = pos
    return values


def _read_tensor_infos(cursor: _Cursor, count: int) -> list[tuple[str, tuple[int, ...], int, int]]:
    infos = []
    for _ in range(count):
        name = cursor.string()
        n_dims = cursor.unpack("<I")
        if n_dims > 4:
            raise GgufFormatError(f"{cursor.path}: tensor {name!r} has {n_dims} dimensions (at most 4)")
        ne = tuple(cursor.unpack("<Q") for _ in range(n_dims))
        infos.append((name, ne, cursor.unpack("<I"), cursor.unpack("<Q")))
    return infos


def _tensor_nbytes(
    path: Path, name: str, ne: tuple[int, ...], raw_type: int
) -> tuple[GGMLQuantizationType, int]:
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError) as exc:
        raise GgufFormatError(f"{path}: tensor {name!r} has unknown ggml type {raw_type}") from exc
    n_elements = 1
    for extent in ne:
        n_elements *= extent
    if n_elements % block_size or (ne and ne[0] % block_size):
        raise GgufFormatError(f"{path}: tensor {name!r} shape {ne} does not fit blocks of {ggml_type.name}")
    return ggml_type, n_elements // block_size * type_size


def _parse_gguf(buffer: mmap.mmap | bytes, path: Path) -> GgufHeader:
    cursor = _Cursor(buffer, path)
    if bytes(buffer[:4]) != _GGUF_MAGIC:
        raise GgufFormatError(f"{path}: not a GGUF file (starts with {bytes(buffer[:4])!r})")
    cursor.pos = 4
    version = cursor.unpack("<I")
    if version not in (2, 3):
        raise GgufFormatError(f"{path}: unsupported GGUF version {version}")
    n_tensors = cursor.unpack("<Q")
    n_fields = cursor.unpack("<Q")
    fields = {}
    for _ in range(n_fields):
        key = cursor.string()
        fields[key] = _read_field(cursor, key)
    infos = _read_tensor_infos(cursor, n_tensors)
    alignment_field = fields.get("general.alignment")
    alignment = int(alignment_field.value) if alignment_field else _DEFAULT_ALIGNMENT
    data_start = -(-cursor.pos // alignment) * alignment
    tensors = {}
    for name, ne, raw_type, relative in infos:
        ggml_type, nbytes = _tensor_nbytes(path, name, ne, raw_type)
        end = data_start + relative + nbytes
        if relative % alignment:
            raise GgufFormatError(
                f"{path}: tensor {name!r} data offset {relative} is not aligned to {alignment}"
            )
        if end > len(buffer):
            raise GgufFormatError(
                f"{path}: truncated: tensor {name!r} ends at byte {end} but the file has {len(buffer)} bytes"
            )
        tensors[name] = GgufTensorInfo(name, ne, ggml_type, data_start + relative, nbytes)
    return GgufHeader(path, version, fields, tensors, len(buffer))


def read_gguf_header(path: Path) -> GgufHeader:
    """Parse the metadata and tensor table of a GGUF file and check that all tensor data lies in the file.

    Raises GgufFormatError (naming the file) for anything unreadable, OSError if the file cannot be opened."""
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 24:
            raise GgufFormatError(f"{path}: not a GGUF file (only {size} bytes)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse_gguf(buffer, path)


# ----------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One file of the official layout and what validation requires of it."""

    attr: str  # ModelDir attribute
    relpath: str  # relative to the model directory ("" for the LLM, found by find_llm_file)
    stage: str
    architecture: str | None  # expected general.architecture; None: not checked (token2wav files carry none)
    keys: Mapping[str, GGUFValueType] = field(default_factory=dict)
    tensors: tuple[str, ...] = ()
    # Further structural checks after keys/tensors: (header, label) -> problem message or None.
    check: Callable[[GgufHeader, str], str | None] | None = None


_U32, _I32, _F32 = GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32
_STR, _ARR = GGUFValueType.STRING, GGUFValueType.ARRAY

AUDIO_STFT_BINS = 201  # 1 + 400 / 2: the audio file's `n_fft` key holds the bin count, not the FFT size
AUDIO_DEFAULT_POSITIONS = 1500  # `max_source_positions` when absent: the encoder's K/V cache size


def _audio_keys_problem(header: GgufHeader) -> str | None:
    """Problems with the audio file's keys beyond presence and type (model-files.md §5.2)."""
    for key in ("n_mel", "n_fft", "max_source_positions"):
        found = header.fields.get(key)
        if found is not None and found.type != _U32:
            return f"key {key!r} has type {found.type.name}, expected UINT32"
    n_head, d_model = header.value("encoder_attention_heads"), header.value("d_model")
    if n_head == 0 or d_model % n_head:
        return f"key 'd_model' ({d_model}) is not a multiple of key 'encoder_attention_heads' ({n_head})"
    n_layer = header.value("encoder_layers")
    if not 0 < n_layer <= len(header.tensors):  # the upper bound only guards against absurd values
        return f"key 'encoder_layers' is {n_layer} (the file has {len(header.tensors)} tensors)"
    n_bins = header.value("n_fft", AUDIO_STFT_BINS)
    if n_bins != AUDIO_STFT_BINS:
        return f"key 'n_fft' is {n_bins}, expected {AUDIO_STFT_BINS} (STFT bins of a 400-point FFT)"
    filters = header.fields["filters"]
    expected = header.value("n_mel", 80) * n_bins
    if filters.item_type != _F32 or len(filters.value) != expected:
        item_type = filters.item_type.name if filters.item_type is not None else "?"
        return (
            f"key 'filters' holds {len(filters.value)} {item_type} values, "
            f"expected {expected} FLOAT32 values (n_mel x n_fft)"
        )
    return None


def _check_audio_layout(header: GgufHeader, label: str) -> str | None:
    """Every tensor of model-files.md §5.3 with its ne; widths not given by keys (FFN, projector, position
    rows) are taken from the first tensor that carries them and must then agree everywhere."""
    problem = _audio_keys_problem(header)
    if problem is not None:
        return f"{label}: {problem}"

    def extent(name: str, axis: int) -> int:
        info = header.tensors.get(name)
        return info.ne[axis] if info is not None and len(info.ne) > axis else -1

    dims = AudioDims(
        d_model=header.value("d_model"),
        n_head=header.value("encoder_attention_heads"),
        n_layer=header.value("encoder_layers"),
        n_ffn=extent("encoder.blocks.0.mlp.0.weight", 1),
        n_mel=header.value("n_mel", 80),
        n_positions=extent("encoder.positional_embedding", 1),
        projector_hidden=extent("audio_projector.linear1.weight", 1),
        projector_out=extent("audio_projector.linear2.weight", 1),
    )
    for name, (shape, _) in audio_tensor_shapes(dims).items():
        info = header.tensors.get(name)
        if info is None:
            return f"{label}: required tensor {name!r} is missing"
        if info.ne != tuple(reversed(shape)):
            return f"{label}: tensor {name!r} has ne {info.ne}, expected {tuple(reversed(shape))}"
    n_positions = header.value("max_source_positions", AUDIO_DEFAULT_POSITIONS)
    if dims.n_positions < n_positions:
        return (
            f"{label}: tensor 'encoder.positional_embedding' has {dims.n_positions} rows, fewer than the "
            f"{n_positions} encoder positions"
        )
    return None


_BOOL = GGUFValueType.BOOL

# Keys both reference loaders require (model-files.md §4.2); checked for presence and exact type.
VISION_REQUIRED_KEYS: dict[str, GGUFValueType] = {
    "clip.has_vision_encoder": _BOOL,
    "clip.projector_type": _STR,
    "clip.vision.image_size": _U32,
    "clip.vision.patch_size": _U32,
    "clip.vision.embedding_length": _U32,
    "clip.vision.feed_forward_length": _U32,
    "clip.vision.projection_dim": _U32,
    "clip.vision.attention.head_count": _U32,
    "clip.vision.attention.layer_norm_epsilon": _F32,
    "clip.vision.block_count": _U32,
    "clip.vision.image_mean": _ARR,
    "clip.vision.image_std": _ARR,
}
# Optional keys of §4.2: when present they must have these types (ggml's typed getters assert them).
VISION_OPTIONAL_KEYS: dict[str, GGUFValueType] = {
    "clip.has_text_encoder": _BOOL,
    "clip.has_minicpmv_projector": _BOOL,
    "general.file_type": _U32,
    "general.description": _STR,
    "clip.minicpmv_version": _I32,
    "clip.minicpmv_query_num": _U32,
    "clip.use_gelu": _BOOL,
}
VISION_DEFAULT_QUERIES = 64  # `clip.minicpmv_query_num` absent or 0 (both loaders, version 100045)
VISION_FFN_FC1 = "v.blk.{}.ffn_down"  # the release stores fc1 (width -> FFN) here: the swap quirk


def _vision_keys_problem(header: GgufHeader) -> str | None:
    """Values of the vision keys beyond presence and type (model-files.md §4.2, §4.5)."""
    for key, expected in VISION_OPTIONAL_KEYS.items():
        found = header.fields.get(key)
        if found is not None and found.type != expected:
            return f"key {key!r} has type {found.type.name}, expected {expected.name}"
    value = header.value
    if value("clip.has_vision_encoder") is not True:
        return "key 'clip.has_vision_encoder' is false, expected true"
    if value("clip.projector_type") != "resampler":
        return f"key 'clip.projector_type' is {value('clip.projector_type')!r}, expected 'resampler'"
    for key in ("clip.vision.image_mean", "clip.vision.image_std"):
        found = header.fields[key]
        if found.item_type != _F32 or len(found.value) < 3:
            item_type = found.item_type.name if found.item_type is not None else "?"
            return f"key {key!r} holds {len(found.value)} {item_type} values, expected 3 FLOAT32 values"
    return _vision_dims_problem(header)


def _vision_dims_problem(header: GgufHeader) -> str | None:
    width, n_head = (
        header.value("clip.vision.embedding_length"),
        header.value("clip.vision.attention.head_count"),
    )
    if n_head == 0 or width % n_head:
        return (
            f"key 'clip.vision.embedding_length' ({width}) is not a multiple of key "
            f"'clip.vision.attention.head_count' ({n_head})"
        )
    image_size, patch = header.value("clip.vision.image_size"), header.value("clip.vision.patch_size")
    if patch == 0 or image_size % patch:
        return (
            f"key 'clip.vision.image_size' ({image_size}) is not a multiple of key "
            f"'clip.vision.patch_size' ({patch})"
        )
    n_layer = header.value("clip.vision.block_count")
    if not 0 < n_layer <= len(header.tensors):  # the upper bound only guards against absurd values
        return f"key 'clip.vision.block_count' is {n_layer} (the file has {len(header.tensors)} tensors)"
    return None


def vision_dims(header: GgufHeader) -> VisionDims:
    """The dims a vision file declares: ViT from its keys, resampler width from `resampler.query`."""
    value = header.value
    info = header.tensors.get("resampler.query")
    return VisionDims(
        width=value("clip.vision.embedding_length"),
        n_head=value("clip.vision.attention.head_count"),
        n_ff=value("clip.vision.feed_forward_length"),
        n_layer=value("clip.vision.block_count"),
        patch=value("clip.vision.patch_size"),
        image_size=value("clip.vision.image_size"),
        resampler_width=info.ne[0] if info is not None and info.ne else -1,
        n_query=value("clip.minicpmv_query_num") or VISION_DEFAULT_QUERIES,
    )


def _vision_tensor_ne(header: GgufHeader, dims: VisionDims) -> dict[str, tuple[int, ...]]:
    """Expected ne of every tensor. Like both reference loaders, accept fc1 under `ffn_up` too (upstream's
    usual naming) when layer 0 has it there: the release layout puts fc1 under `ffn_down`."""
    expected = {name: tuple(reversed(shape)) for name, (shape, _) in vision_shapes(dims).items()}
    fc1 = header.tensors.get(f"{VISION_FFN_FC1.format(0)}.weight")
    if fc1 is not None and fc1.ne[:1] != (dims.width,) and dims.n_ff != dims.width:
        for layer in range(dims.n_layer):
            down, up = f"v.blk.{layer}.ffn_down", f"v.blk.{layer}.ffn_up"
            for suffix in (".weight", ".bias"):
                expected[down + suffix], expected[up + suffix] = (
                    expected[up + suffix],
                    expected[down + suffix],
                )
    return expected


def _check_vision_layout(header: GgufHeader, label: str) -> str | None:
    """The keys' values, then every tensor of model-files.md §4.3 with the ne the keys imply; the position
    tables have 70x70 rows; the resampler width is a multiple of its 128-wide head; no `v.class_embd`."""
    problem = _vision_keys_problem(header)
    if problem is None:
        dims = vision_dims(header)
        problem = _first_ne_mismatch(header, _vision_tensor_ne(header, dims))
        if problem is None and dims.resampler_width % RESAMPLER_HEAD_SIZE:
            problem = (
                f"tensor 'resampler.query' has width {dims.resampler_width}, not a multiple of the "
                f"resampler head size {RESAMPLER_HEAD_SIZE}"
            )
        if problem is None and "v.class_embd" in header.tensors:
            problem = "tensor 'v.class_embd' must be absent (the resampler projector has no class token)"
    return f"{label}: {problem}" if problem is not None else None


TTS_N_CODES = 6562  # 6561 speech codes + EOS (model-files.md §2)
TTS_TEXT_IDS = (151687, 151692)  # audio-BOS and text-EOS: rows of emb_text the engine always reads


def _first_ne_mismatch(header: GgufHeader, expected: Mapping[str, tuple[int, ...]]) -> str | None:
    for name, ne in expected.items():
        info = header.tensors.get(name)
        if info is None:
            return f"required tensor {name!r} is missing"
        if info.ne != ne:
            return f"tensor {name!r} has ne {info.ne}, expected {ne}"
    return None


def _projector_shapes(prefix: str, n_in: int, n_embd: int) -> dict[str, tuple[int, ...]]:
    """ne of Linear(n_in, n_embd), ReLU, Linear(n_embd, n_embd) with biases (model-files.md §6.3/§7)."""
    return {
        f"{prefix}linear1.weight": (n_in, n_embd),
        f"{prefix}linear1.bias": (n_embd,),
        f"{prefix}linear2.weight": (n_embd, n_embd),
        f"{prefix}linear2.bias": (n_embd,),
    }


def _tts_keys_problem(header: GgufHeader) -> str | None:
    n_embd, n_head = header.value("llama.embedding_length"), header.value("llama.attention.head_count")
    n_head_kv, n_layer = header.value("llama.attention.head_count_kv"), header.value("llama.block_count")
    if n_head == 0 or n_embd % n_head or (n_embd // n_head) % 2:
        return (
            f"key 'llama.embedding_length' ({n_embd}) is not an even multiple of key "
            f"'llama.attention.head_count' ({n_head})"
        )
    if n_head_kv == 0 or n_head % n_head_kv:
        return f"key 'llama.attention.head_count_kv' ({n_head_kv}) does not divide the head count ({n_head})"
    if not 0 < n_layer <= len(header.tensors):  # the upper bound only guards against absurd values
        return f"key 'llama.block_count' is {n_layer} (the file has {len(header.tensors)} tensors)"
    return None


def _tts_tensor_ne(header: GgufHeader) -> dict[str, tuple[int, ...]]:
    """ne of every tensor the engine reads (model-files.md §6.3); the LLM width is the projector's input."""
    value = header.value
    e, f = value("llama.embedding_length"), value("llama.feed_forward_length")
    kv = e // value("llama.attention.head_count") * value("llama.attention.head_count_kv")
    expected: dict[str, tuple[int, ...]] = {}
    for layer in range(value("llama.block_count")):
        block = f"blk.{layer}"
        expected |= {
            f"{block}.attn_norm.weight": (e,),
            f"{block}.attn_q.weight": (e, e),
            f"{block}.attn_k.weight": (e, kv),
            f"{block}.attn_v.weight": (e, kv),
            f"{block}.attn_output.weight": (e, e),
            f"{block}.ffn_norm.weight": (e,),
            f"{block}.ffn_gate.weight": (e, f),
            f"{block}.ffn_up.weight": (e, f),
            f"{block}.ffn_down.weight": (f, e),
        }
    n_llm = header.tensors["projector_semantic.linear1.weight"].ne[0]
    n_text = header.tensors["emb_text.weight"].ne[-1]
    expected |= {
        "output_norm.weight": (e,),
        "emb_text.weight": (e, n_text),
        "emb_code.0.weight": (e, TTS_N_CODES),
        "head_code.0.weight": (TTS_N_CODES, e),  # transposed: code index contiguous
    }
    return expected | _projector_shapes("projector_semantic.", n_llm, e)


def _check_tts_layout(header: GgufHeader, label: str) -> str | None:
    """The keys' consistency, then every tensor the engine reads with its ne; `emb_text` must hold the rows
    of the TTS ids 151687/151692 (they are LLM token ids)."""
    problem = _tts_keys_problem(header) or _first_ne_mismatch(header, _tts_tensor_ne(header))
    if problem is not None:
        return f"{label}: {problem}"
    n_text = header.tensors["emb_text.weight"].ne[1]
    if n_text <= max(TTS_TEXT_IDS):
        return (
            f"{label}: tensor 'emb_text.weight' has {n_text} rows, but the TTS ids "
            f"{TTS_TEXT_IDS[0]}/{TTS_TEXT_IDS[1]} need at least {max(TTS_TEXT_IDS) + 1}"
        )
    return None


def _check_projector_layout(header: GgufHeader, label: str) -> str | None:
    info = header.tensors["linear1.weight"]
    if len(info.ne) != 2:
        return f"{label}: tensor 'linear1.weight' has ne {info.ne}, expected 2 dimensions"
    problem = _first_ne_mismatch(header, _projector_shapes("", info.ne[0], info.ne[1]))
    return f"{label}: {problem}" if problem is not None else None


# ---- Token2Wav files (model-files.md §8): widths come from the tensors, every tensor's ne must fit them ----


def _extent(header: GgufHeader, name: str, axis: int) -> int:
    info = header.tensors.get(name)
    return info.ne[axis] if info is not None and len(info.ne) > axis else -1


def _count_numbered(header: GgufHeader, pattern: str) -> int:
    """How many of pattern.format(0), pattern.format(1), ... exist, counting up to the first gap."""
    count = 0
    while pattern.format(count) in header.tensors:
        count += 1
    return count


def _ratio(numerator: int, denominator: int) -> int:
    return numerator // denominator if denominator > 0 else 0


def _table_mismatch(header: GgufHeader, table: ShapeTable) -> str | None:
    return _first_ne_mismatch(header, {name: tuple(reversed(shape)) for name, (shape, _) in table.items()})


def _non_f32_tensor(header: GgufHeader) -> str | None:
    for name, info in header.tensors.items():
        if info.ggml_type != GGMLQuantizationType.F32:
            return f"tensor {name!r} is {info.ggml_type.name}, expected F32 (the Token2Wav files are F32)"
    return None


def token2wav_encoder_dims(header: GgufHeader) -> EncoderDims:
    return EncoderDims(
        width=_extent(header, "embed.out.0.weight", 1),
        n_blocks=_count_numbered(header, "encoders.{}.norm_mha.weight"),
        n_up_blocks=_count_numbered(header, "up_encoders.{}.norm_mha.weight"),
        n_heads=_extent(header, "encoders.0.self_attn.pos_bias_u", 1),
        n_units=_extent(header, "encoders.0.feed_forward.w_1.weight", 1),
        pre_lookahead=_extent(header, "pre_lookahead_layer.conv1.weight", 0) - 1,
        up_stride=_ratio(_extent(header, "up_layer.conv.weight", 0) - 1, 2),
    )


def token2wav_dit_dims(header: GgufHeader) -> DitDims:
    head_dim = _extent(header, "estimator.blocks.0.attn.q_norm.weight", 0)
    return DitDims(
        hidden=_extent(header, "estimator.in_proj.weight", 1),
        depth=_count_numbered(header, "estimator.blocks.{}.attn.to_q.weight"),
        n_heads=_ratio(_extent(header, "estimator.blocks.0.attn.to_q.weight", 1), head_dim),
        head_dim=head_dim,
        mlp_hidden=_extent(header, "estimator.blocks.0.mlp.fc1.weight", 1),
        time_embd=_extent(header, "estimator.t_embedder.mlp.0.weight", 0),
    )


def _check_t2w_encoder(header: GgufHeader, label: str) -> str | None:
    dims = token2wav_encoder_dims(header)
    problem = _non_f32_tensor(header)
    if problem is None and (dims.n_heads <= 0 or dims.width % dims.n_heads):
        problem = (
            f"tensor 'encoders.0.self_attn.pos_bias_u' gives {dims.n_heads} heads, which do not divide "
            f"the width {dims.width}"
        )
    problem = problem or _table_mismatch(header, encoder_shapes(dims))
    return f"{label}: {problem}" if problem is not None else None


def _check_t2w_flow_matching(header: GgufHeader, label: str) -> str | None:
    problem = _non_f32_tensor(header) or _table_mismatch(
        header, flow_matching_shapes(token2wav_dit_dims(header))
    )
    return f"{label}: {problem}" if problem is not None else None


def _check_t2w_flow_extra(header: GgufHeader, label: str) -> str | None:
    dims = EncoderDims(width=_extent(header, "input_embedding.weight", 0))
    problem = _non_f32_tensor(header) or _table_mismatch(header, flow_extra_shapes(dims))
    return f"{label}: {problem}" if problem is not None else None


def _check_t2w_hifigan(header: GgufHeader, label: str) -> str | None:
    dims = HiftDims(
        base_channels=_extent(header, "conv_pre.weight", 2),
        f0_channels=_extent(header, "f0_predictor.condnet.0.weight", 2),
    )
    problem = _non_f32_tensor(header) or _table_mismatch(header, hifigan_shapes(dims))
    return f"{label}: {problem}" if problem is not None else None


_SPK_CB = f"{PROMPT_CACHE_PREFIX}spk_cb"
PROMPT_CACHE_TENSORS = (
    "spk_cb",
    "conformer_cnn_cache",
    "conformer_att_cache",
    "estimator_cnn_cache",
    "estimator_att_cache",
)


def _prompt_cache_dims(header: GgufHeader) -> Token2WavDims:
    """The dims the cache tensors imply on their own (all conformer layers counted as token-rate layers)."""
    p, n_timesteps = PROMPT_CACHE_PREFIX, header.value("mtmd.prompt_cache.n_timesteps")
    depth = _ratio(_extent(header, f"{p}estimator_cnn_cache", 2), n_timesteps)
    return Token2WavDims(
        encoder=EncoderDims(
            width=_extent(header, f"{p}conformer_cnn_cache", 0),
            n_blocks=_extent(header, f"{p}conformer_att_cache", 3),
            n_up_blocks=0,
            n_heads=_extent(header, f"{p}conformer_att_cache", 2),
            up_stride=_ratio(_extent(header, f"{p}conformer_cnn_cache", 1) - 2, 2),
        ),
        dit=DitDims(
            hidden=_ratio(_extent(header, f"{p}estimator_cnn_cache", 0), 2),
            depth=depth,
            n_heads=_ratio(_extent(header, f"{p}estimator_att_cache", 2), depth * n_timesteps),
            head_dim=_ratio(_extent(header, f"{p}estimator_att_cache", 0), 2),
        ),
        prompt=PromptCacheDims(
            n_timesteps=n_timesteps, n_frames=_extent(header, f"{p}conformer_att_cache", 1)
        ),
    )


def _prompt_cache_ne(dims: Token2WavDims) -> dict[str, tuple[int, ...]]:
    return {name: tuple(reversed(shape)) for name, (shape, _) in prompt_cache_shapes(dims).items()}


def _check_t2w_prompt_cache(header: GgufHeader, label: str) -> str | None:
    """The caches must agree with each other (time length, CFG rows, slots = depth x NT); the speaker vector
    may be stored (192) or (192, 1). Widths against the encoder and DiT files: `_prompt_cache_ties`."""
    n_timesteps = header.value("mtmd.prompt_cache.n_timesteps")
    if n_timesteps <= 0:
        return (
            f"{label}: key 'mtmd.prompt_cache.n_timesteps' is {n_timesteps}, expected a positive step count"
        )
    for name in PROMPT_CACHE_TENSORS:
        ne = header.tensors[f"{PROMPT_CACHE_PREFIX}{name}"].ne
        if 0 in ne:
            return f"{label}: tensor '{PROMPT_CACHE_PREFIX}{name}' has ne {ne}, an empty dimension"
    expected = _prompt_cache_ne(_prompt_cache_dims(header))
    if header.tensors[_SPK_CB].ne == (*expected[_SPK_CB], 1):
        expected[_SPK_CB] = header.tensors[_SPK_CB].ne
    problem = _non_f32_tensor(header) or _first_ne_mismatch(header, expected)
    return f"{label}: {problem}" if problem is not None else None


LLM_SPEC = FileSpec(
    "llm",
    "",
    "llm",
    "qwen3",
    {
        "qwen3.block_count": _U32,
        "qwen3.embedding_length": _U32,
        "qwen3.feed_forward_length": _U32,
        "qwen3.attention.head_count": _U32,
        "qwen3.attention.head_count_kv": _U32,
        "qwen3.attention.layer_norm_rms_epsilon": _F32,
        "tokenizer.ggml.model": _STR,
        "tokenizer.ggml.tokens": _ARR,
        "tokenizer.ggml.merges": _ARR,
    },
    ("token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"),
)

FILE_SPECS: tuple[FileSpec, ...] = (
    LLM_SPEC,
    FileSpec(
        "vision",
        "vision/MiniCPM-o-4_5-vision-F16.gguf",
        "vision",
        "clip",
        VISION_REQUIRED_KEYS,
        ("v.patch_embd.weight", "v.blk.0.ffn_down.weight", "resampler.query"),
        check=_check_vision_layout,
    ),
    FileSpec(
        "audio",
        "audio/MiniCPM-o-4_5-audio-F16.gguf",
        "audio",
        "whisper",
        {"encoder_attention_heads": _U32, "encoder_layers": _U32, "d_model": _U32, "filters": _ARR},
        ("encoder.conv1.weight", "audio_projector.linear2.weight"),
        check=_check_audio_layout,
    ),
    FileSpec(
        "tts",
        "tts/MiniCPM-o-4_5-tts-F16.gguf",
        "tts",
        "llama",
        {
            "llama.block_count": _U32,
            "llama.embedding_length": _U32,
            "llama.feed_forward_length": _U32,
            "llama.attention.head_count": _U32,
            "llama.attention.head_count_kv": _U32,
            "llama.context_length": _U32,
            "llama.rope.freq_base": _F32,
            "llama.attention.layer_norm_rms_epsilon": _F32,
        },
        (
            "emb_text.weight",
            "emb_code.0.weight",
            "head_code.0.weight",
            "output_norm.weight",
            "projector_semantic.linear1.weight",
        ),
        check=_check_tts_layout,
    ),
    FileSpec(
        "tts_projector",
        "tts/MiniCPM-o-4_5-projector-F16.gguf",
        "tts",
        "projector",
        {},
        ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"),
        check=_check_projector_layout,
    ),
    FileSpec(
        "token2wav_encoder",
        "token2wav-gguf/encoder.gguf",
        "token2wav",
        None,
        {},
        (
            "embed.out.0.weight",
            "pre_lookahead_layer.conv1.weight",
            "encoders.0.self_attn.pos_bias_u",
            "encoders.0.feed_forward.w_1.weight",
            "up_layer.conv.weight",
            "up_encoders.0.norm_mha.weight",
            "after_norm.weight",
        ),
        check=_check_t2w_encoder,
    ),
    FileSpec(
        "token2wav_flow_matching",
        "token2wav-gguf/flow_matching.gguf",
        "token2wav",
        None,
        {},
        (
            "estimator.t_embedder.mlp.0.weight",
            "estimator.in_proj.weight",
            "estimator.blocks.0.attn.to_q.weight",
            "estimator.blocks.0.attn.q_norm.weight",
            "estimator.blocks.0.mlp.fc1.weight",
            "estimator.final_layer.linear.weight",
        ),
        check=_check_t2w_flow_matching,
    ),
    FileSpec(
        "token2wav_flow_extra",
        "token2wav-gguf/flow_extra.gguf",
        "token2wav",
        None,
        {},
        ("input_embedding.weight", "spk_embed_affine_layer.weight", "encoder_proj.weight"),
        check=_check_t2w_flow_extra,
    ),
    FileSpec(
        "token2wav_hifigan",
        "token2wav-gguf/hifigan2.gguf",
        "token2wav",
        None,
        {},
        (
            "conv_pre.weight",
            "f0_predictor.condnet.0.weight",
            "f0_predictor.classifier.bias",
            "conv_post.weight",
        ),
        check=_check_t2w_hifigan,
    ),
    FileSpec(
        "token2wav_prompt_cache",
        "token2wav-gguf/prompt_cache.gguf",
        "token2wav",
        None,
        {"mtmd.prompt_cache.n_timesteps": _I32, "mtmd.prompt_cache.temperature": _F32},
        tuple(f"{PROMPT_CACHE_PREFIX}{name}" for name in PROMPT_CACHE_TENSORS),
        check=_check_t2w_prompt_cache,
    ),
)

STAGES = ("llm", "vision", "audio", "tts", "token2wav")


def _is_llm_candidate(path: Path) -> bool:
    lowered = path.name.lower()
    return path.is_file() and lowered.endswith(".gguf") and not any(p in lowered for p in _NON_LLM_NAME_PARTS)


def find_llm_file(model_dir: Path) -> Path:
    """The LLM GGUF at the top level of `model_dir`: MiniCPM-o-4_5-Q4_K_M > Q8_0 > F16 > any other *.gguf
    (alphabetical; names that look like vision/audio/TTS/mmproj files are ignored).

    Raises FileNotFoundError naming the directory when there is none."""
    model_dir = Path(model_dir)
    candidates = sorted(p for p in model_dir.glob("*") if _is_llm_candidate(p)) if model_dir.is_dir() else []
    by_name = {p.name.lower(): p for p in candidates}
    for quant in LLM_QUANT_PREFERENCE:
        preferred = by_name.get(f"{LLM_PREFIX}{quant}.gguf".lower())
        if preferred is not None:
            return preferred
    if candidates:
        return candidates[0]
    raise FileNotFoundError(
        f"no LLM file in {model_dir}: expected {LLM_PREFIX}<quant>.gguf "
        f"(quant {', '.join(LLM_QUANT_PREFERENCE)}) at the top level of the directory"
    )


@dataclass(frozen=True)
class ModelDir:
    """Resolved paths of every file of the official layout; None where the file is absent."""

    root: Path
    llm: Path | None = None
    vision: Path | None = None
    audio: Path | None = None
    tts: Path | None = None
    tts_projector: Path | None = None
    token2wav_encoder: Path | None = None
    token2wav_flow_matching: Path | None = None
    token2wav_flow_extra: Path | None = None
    token2wav_hifigan: Path | None = None
    token2wav_prompt_cache: Path | None = None

    @classmethod
    def locate(cls, root: Path) -> ModelDir:
        root = Path(root)
        paths: dict[str, Path | None] = {}
        for spec in FILE_SPECS:
            if spec is LLM_SPEC:
                try:
                    paths[spec.attr] = find_llm_file(root)
                except FileNotFoundError:
                    paths[spec.attr] = None
            else:
                candidate = root / spec.relpath
                paths[spec.attr] = candidate if candidate.is_file() else None
        return cls(root=root, **paths)

    @property
    def token2wav_dir(self) -> Path:
        return self.root / "token2wav-gguf"


def _contains_model(path: Path) -> bool:
    try:
        find_llm_file(path)
    except FileNotFoundError:
        return False
    return True


def _model_dir_at_or_below(path: Path) -> Path | None:
    """`path` if it holds an LLM file, else its first sub-directory that does (real downloads before
    tiny demos, then alphabetical)."""
    if _contains_model(path):
        return path
    if not path.is_dir():
        return None
    subdirs = [p for p in sorted(path.iterdir()) if p.is_dir() and _contains_model(p)]
    subdirs.sort(key=lambda p: (is_tiny_demo(p), p.name))
    return subdirs[0] if subdirs else None


def default_models_dir() -> Path:
    """`<repo>/models` for a source checkout (python/omni_app/config.py -> repo root)."""
    return Path(__file__).resolve().parents[2] / "models"


def resolve_model_dir(
    cli_value: str | None, env: Mapping[str, str] = os.environ, models_dir: Path | None = None
) -> Path | None:
    """The model directory to use: the CLI value, else $OMNI_MODEL_DIR, else `<repo>/models` if it (or one
    directory below it) holds an LLM file; None when nothing is configured or found.

    An explicit value is returned even if it holds no model (validation then says what is missing), unless
    the model sits one directory below it, in which case that sub-directory is returned."""
    for explicit in (cli_value, env.get(ENV_MODEL_DIR)):
        if explicit:
            path = Path(explicit).expanduser()
            return _model_dir_at_or_below(path) or path
    return _model_dir_at_or_below(models_dir if models_dir is not None else default_models_dir())


def is_tiny_demo(model_dir: Path) -> bool:
    """True for directories written by `omni_app.tiny_models` (README marker, or the metadata marker in the
    LLM file)."""
    model_dir = Path(model_dir)
    if (model_dir / TINY_DEMO_README).is_file():
        return True
    try:
        header = read_gguf_header(find_llm_file(model_dir))
    except (OSError, GgufFormatError):
        return False
    return header.value(TINY_DEMO_KEY) is True


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStatus:
    attr: str
    label: str  # path relative to the model directory, as shown to the user
    stage: str
    status: FileState
    message: str = ""
    path: Path | None = None


@dataclass(frozen=True)
class ModelDirReport:
    root: Path
    files: tuple[FileStatus, ...]
    stages: dict[str, bool]
    tiny_demo: bool
    error: str | None = None  # problem with the directory itself

    @property
    def ok(self) -> bool:
        """The directory can run the assistant: the LLM is present and valid."""
        return self.error is None and self.stages.get("llm", False)

    @property
    def problems(self) -> list[str]:
        found = [self.error] if self.error else []
        return found + [
            f.message for f in self.files if f.status == "invalid" or (f.stage == "llm" and f.message)
        ]

    def status_of(self, attr: str) -> FileStatus:
        return next(f for f in self.files if f.attr == attr)


def _spec_problem(header: GgufHeader, spec: FileSpec, label: str) -> str | None:
    if spec.architecture is not None:
        arch = header.value("general.architecture")
        if arch != spec.architecture:
            return f"{label}: general.architecture is {arch!r}, expected {spec.architecture!r}"
    for key, expected in spec.keys.items():
        found = header.fields.get(key)
        if found is None:
            return f"{label}: required key {key!r} is missing"
        if found.type != expected:
            return f"{label}: key {key!r} has type {found.type.name}, expected {expected.name}"
    for tensor in spec.tensors:
        if tensor not in header.tensors:
            return f"{label}: required tensor {tensor!r} is missing"
    return spec.check(header, label) if spec.check is not None else None


def _read_and_check(path: Path, spec: FileSpec, label: str) -> tuple[GgufHeader | None, str | None]:
    """(header or None when unreadable, problem or None)."""
    try:
        header = read_gguf_header(path)
    except GgufFormatError as exc:
        return None, f"{label}: {str(exc).removeprefix(f'{path}: ')}"
    except OSError as exc:
        return None, f"{label}: cannot read file ({exc.strerror or exc})"
    return header, _spec_problem(header, spec, label)


def check_gguf_file(path: Path, spec: FileSpec, label: str) -> str | None:
    """None if the file satisfies `spec`, else a message naming the file and the key/tensor at fault."""
    return _read_and_check(path, spec, label)[1]


def _check_one(root: Path, spec: FileSpec) -> tuple[FileStatus, GgufHeader | None]:
    if spec is LLM_SPEC:
        try:
            path = find_llm_file(root)
        except FileNotFoundError as exc:
            return FileStatus(spec.attr, f"{LLM_PREFIX}<quant>.gguf", spec.stage, "missing", str(exc)), None
        label = path.name
    else:
        path, label = root / spec.relpath, spec.relpath
        if not path.is_file():
            return FileStatus(spec.attr, label, spec.stage, "missing", f"{label}: not found", None), None
    header, problem = _read_and_check(path, spec, label)
    if problem is not None:
        return FileStatus(spec.attr, label, spec.stage, "invalid", problem, path), None
    return FileStatus(spec.attr, label, spec.stage, "present", "", path), header


# ---- widths that must agree between files (model-files.md §2) --------------------------------------


def _llm_hidden_problem(width: int, tensor: str, headers: Mapping[str, GgufHeader]) -> str | None:
    llm = headers.get("llm")
    hidden = llm.value("qwen3.embedding_length") if llm is not None else None
    if hidden is None or width == hidden:
        return None
    return f"tensor {tensor!r} takes {width} inputs, but the LLM hidden size is {hidden} ({llm.path.name})"


def _vision_ties(vision: GgufHeader, headers: Mapping[str, GgufHeader]) -> str | None:
    llm = headers.get("llm")
    hidden = llm.value("qwen3.embedding_length") if llm is not None else None
    width = vision.tensors["resampler.query"].ne[0]
    if hidden is None or width == hidden:
        return None
    return (
        f"the resampler width (tensor 'resampler.query' ne0) is {width}, but the LLM hidden size is {hidden} "
        f"({llm.path.name})"
    )


def _tts_ties(tts: GgufHeader, headers: Mapping[str, GgufHeader]) -> str | None:
    width = tts.tensors["projector_semantic.linear1.weight"].ne[0]
    return _llm_hidden_problem(width, "projector_semantic.linear1.weight", headers)


def _tts_projector_ties(projector: GgufHeader, headers: Mapping[str, GgufHeader]) -> str | None:
    n_in, n_out = projector.tensors["linear1.weight"].ne
    problem = _llm_hidden_problem(n_in, "linear1.weight", headers)
    tts = headers.get("tts")
    if problem is None and tts is not None and n_out != tts.value("llama.embedding_length"):
        problem = (
            f"tensor 'linear1.weight' gives {n_out} outputs, but the TTS hidden size "
            f"(llama.embedding_length) is {tts.value('llama.embedding_length')}"
        )
    return problem


def _flow_extra_ties(extra: GgufHeader, headers: Mapping[str, GgufHeader]) -> str | None:
    encoder = headers.get("token2wav_encoder")
    if encoder is None:
        return None
    n_in, width = encoder.tensors["embed.out.0.weight"].ne
    embedding, projection = (
        extra.tensors["input_embedding.weight"].ne[0],
        extra.tensors["encoder_proj.weight"].ne[0],
    )
    if embedding != n_in:
        return (
            f"tensor 'input_embedding.weight' has width {embedding}, but the encoder takes {n_in} inputs "
            f"({encoder.path.name})"
        )
    if projection != width:
        return (
            f"tensor 'encoder_proj.weight' takes {projection} inputs, but the encoder width is {width} "
            f"({encoder.path.name})"
        )
    return None


def _prompt_cache_ties(cache: GgufHeader, headers: Mapping[str, GgufHeader]) -> str | None:
    """Conformer caches follow the encoder's widths, estimator caches the DiT's (with the file's NT)."""
    own = _prompt_cache_dims(cache)
    for attr, part in (("token2wav_encoder", "conformer"), ("token2wav_flow_matching", "estimator")):
        other = headers.get(attr)
        if other is None:
            continue
        if part == "conformer":
            dims = replace(own, encoder=token2wav_encoder_dims(other))
        else:
            dims = replace(own, dit=token2wav_dit_dims(other))
        for name, ne in _prompt_cache_ne(dims).items():
            found = cache.tensors[name].ne
            if part in name and found != ne:
                return f"tensor {name!r} has ne {found}, but {other.path.name} implies {ne}"
    return None


_CROSS_FILE_CHECKS: dict[str, Callable[[GgufHeader, Mapping[str, GgufHeader]], str | None]] = {
    "vision": _vision_ties,
    "tts": _tts_ties,
    "tts_projector": _tts_projector_ties,
    "token2wav_flow_extra": _flow_extra_ties,
    "token2wav_prompt_cache": _prompt_cache_ties,
}


def _with_cross_file_checks(checked: list[tuple[FileStatus, GgufHeader | None]]) -> tuple[FileStatus, ...]:
    """Valid files whose widths disagree with another valid file become invalid (the other file is named)."""
    headers = {status.attr: header for status, header in checked if header is not None}
    files = []
    for status, header in checked:
        check = _CROSS_FILE_CHECKS.get(status.attr)
        problem = check(header, headers) if check is not None and header is not None else None
        if problem is not None:
            status = replace(status, status="invalid", message=f"{status.label}: {problem}")
        files.append(status)
    return tuple(files)


def validate_model_dir(path: Path) -> ModelDirReport:
    """Check every file of the official layout under `path`; a stage is available when all its files are
    present and valid (tts needs the TTS and projector files, token2wav all five token2wav-gguf files).
    Widths shared between files are cross-checked (vision resampler width = LLM hidden size, TTS projector
    input = LLM hidden size, projector output = TTS hidden size; Token2Wav embedding and projection widths =
    encoder widths, prompt-cache extents = encoder and DiT widths)."""
    root = Path(path)
    if not root.is_dir():
        problem = (
            f"model directory {root} does not exist" if not root.exists() else f"{root} is not a directory"
        )
        files = tuple(
            FileStatus(s.attr, s.relpath or f"{LLM_PREFIX}<quant>.gguf", s.stage, "missing")
            for s in FILE_SPECS
        )
        return ModelDirReport(root, files, dict.fromkeys(STAGES, False), False, problem)
    files = _with_cross_file_checks([_check_one(root, spec) for spec in FILE_SPECS])
    stages = {stage: all(f.status == "present" for f in files if f.stage == stage) for stage in STAGES}
    return ModelDirReport(root, files, stages, is_tiny_demo(root))


def check_models_report_text(report: ModelDirReport) -> str:
    """Human-readable report for `omni-app check-models`."""
    kind = " (tiny random-weight demo files)" if report.tiny_demo else ""
    lines = [f"Model directory: {report.root}{kind}"]
    if report.error:
        lines.append(f"  ERROR: {report.error}")
    width = max(len(f.label) for f in report.files)
    for status in report.files:
        tag = {"present": "ok", "missing": "missing", "invalid": "INVALID"}[status.status]
        detail = status.message if status.status == "invalid" else ""
        lines.append(f"  [{tag:<7}] {status.label:<{width}}  {status.stage:<9} {detail}".rstrip())
    available = [stage for stage in STAGES if report.stages[stage]]
    unavailable = [stage for stage in STAGES if not report.stages[stage]]
    lines.append(f"Stages available: {', '.join(available) or 'none'}")
    if unavailable:
        lines.append(f"Stages unavailable: {', '.join(unavailable)}")
    if report.ok:
        lines.append("Result: OK (the LLM loads; missing optional stages are disabled)")
    else:
        lines.append("Result: NOT USABLE")
        lines.extend(f"  - {problem}" for problem in report.problems)
    return "\n".join(lines)

"""Random-weight stand-in for `audio/MiniCPM-o-4_5-audio-F16.gguf`: the Whisper-style audio encoder plus the
audio projector in the custom layout of model-files.md §5.2/§5.3 (tiny dimensions of §9.2 by default).

Dtype policy of the release converter (dtype "f16", the default): conv and Linear weights F16; 1-D tensors,
the two conv biases (stored 2-D as numpy (C, 1), i.e. ne (1, C)) and the positional table F32 — every F32
value rounded through F16 first, as the converter casts all tensors to F16 before widening those back.
dtype "f32" stores every tensor in F32 with the same values (exact parity runs, where F16 rounding of
activations in the engine's matrix products would hide differences as small as tanh vs erf GELU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.llm import TINY_DEMO_KEY

AUDIO_FILE = "audio/MiniCPM-o-4_5-audio-F16.gguf"
ARCH = "whisper"
DESCRIPTION = "audio encoder for MiniCPM-omni"
SAMPLE_RATE = 16000
N_FFT = 400  # STFT size; the file's `n_fft` key holds the bin count 1 + N_FFT / 2

MATRIX_SIGMA = 0.05
NORM_SIGMA = 0.05
BIAS_SIGMA = 0.02
# Larger than the matrices so that a wrong window of positional rows changes the output clearly (the real
# table is sinusoidal, with values in [-1, 1]).
POSITION_SIGMA = 0.5
# Separate stream from the LLM writer, which seeds default_rng(seed) directly.
_RNG_STREAM = 0xA0D10


@dataclass(frozen=True)
class AudioDims:
    d_model: int = 64
    n_head: int = 4
    n_layer: int = 2
    n_ffn: int = 256
    n_mel: int = 80
    n_bins: int = 1 + N_FFT // 2
    n_positions: int = 1500
    projector_hidden: int = 128  # real: 4096
    projector_out: int = 128  # = LLM hidden size
    pool_step: int = 5


TINY_AUDIO_DIMS = AudioDims()
FULL_AUDIO_DIMS = AudioDims(
    d_model=1024, n_head=16, n_layer=24, n_ffn=4096, projector_hidden=4096, projector_out=4096
)

_FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}

# How a tensor is initialised and stored: "matrix" F16 N(0, 0.05); "norm" F32 1 + N(0, 0.05);
# "bias" F32 N(0, 0.02); "positions" F32 N(0, 0.5).
_KIND_SIGMA = {"matrix": MATRIX_SIGMA, "norm": NORM_SIGMA, "bias": BIAS_SIGMA, "positions": POSITION_SIGMA}


def mel_filters(n_mel: int = 80) -> np.ndarray:
    """librosa's Slaney mel filterbank for 16 kHz and a 400-point FFT: float32 (n_mel, 201)."""
    from librosa.filters import mel  # imported here: librosa takes ~1.5 s to import

    return mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mel)


def _layer_shapes(layer: int, dims: AudioDims) -> dict[str, tuple[tuple[int, ...], str]]:
    block, d = f"encoder.blocks.{layer}", dims.d_model
    return {
        f"{block}.attn_ln.weight": ((d,), "norm"),
        f"{block}.attn_ln.bias": ((d,), "bias"),
        f"{block}.attn.query.weight": ((d, d), "matrix"),
        f"{block}.attn.query.bias": ((d,), "bias"),
        f"{block}.attn.key.weight": ((d, d), "matrix"),  # the K projection has no bias
        f"{block}.attn.value.weight": ((d, d), "matrix"),
        f"{block}.attn.value.bias": ((d,), "bias"),
        f"{block}.attn.out.weight": ((d, d), "matrix"),
        f"{block}.attn.out.bias": ((d,), "bias"),
        f"{block}.mlp_ln.weight": ((d,), "norm"),
        f"{block}.mlp_ln.bias": ((d,), "bias"),
        f"{block}.mlp.0.weight": ((dims.n_ffn, d), "matrix"),
        f"{block}.mlp.0.bias": ((dims.n_ffn,), "bias"),
        f"{block}.mlp.2.weight": ((d, dims.n_ffn), "matrix"),
        f"{block}.mlp.2.bias": ((d,), "bias"),
    }


def tensor_shapes(dims: AudioDims = TINY_AUDIO_DIMS) -> dict[str, tuple[tuple[int, ...], str]]:
    """numpy shape (GGUF ne reversed) and init kind of every tensor, in file order."""
    d = dims.d_model
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        "encoder.conv1.weight": ((d, dims.n_mel, 3), "matrix"),
        "encoder.conv1.bias": ((d, 1), "bias"),
        "encoder.conv2.weight": ((d, d, 3), "matrix"),
        "encoder.conv2.bias": ((d, 1), "bias"),
        "encoder.positional_embedding": ((dims.n_positions, d), "positions"),
    }
    for layer in range(dims.n_layer):
        shapes |= _layer_shapes(layer, dims)
    shapes |= {
        "encoder.ln_post.weight": ((d,), "norm"),
        "encoder.ln_post.bias": ((d,), "bias"),
        "audio_projector.linear1.weight": ((dims.projector_hidden, d), "matrix"),
        "audio_projector.linear1.bias": ((dims.projector_hidden,), "bias"),
        "audio_projector.linear2.weight": ((dims.projector_out, dims.projector_hidden), "matrix"),
        "audio_projector.linear2.bias": ((dims.projector_out,), "bias"),
    }
    return shapes


def random_weights(seed: int, dims: AudioDims = TINY_AUDIO_DIMS, dtype: str = "f16") -> dict[str, np.ndarray]:
    """Seeded weights of F16 precision in the stored dtypes: "matrix" tensors F16 (dtype "f16") or F32
    (dtype "f32"), the rest F32. The values do not depend on `dtype`."""
    if dtype not in _FILE_TYPES:
        raise ValueError(f"unsupported audio dtype {dtype!r}; expected one of {sorted(_FILE_TYPES)}")
    rng = np.random.default_rng([seed, _RNG_STREAM])
    weights: dict[str, np.ndarray] = {}
    for name, (shape, kind) in tensor_shapes(dims).items():
        values = _KIND_SIGMA[kind] * rng.standard_normal(shape, dtype=np.float32)
        if kind == "norm":
            values += 1.0
        as_f16 = values.astype(np.float16)
        weights[name] = as_f16 if kind == "matrix" and dtype == "f16" else as_f16.astype(np.float32)
    return weights


def _add_metadata(writer: gguf.GGUFWriter, dims: AudioDims, dtype: str, tiny_demo: bool) -> None:
    """The keys of model-files.md §5.2 in its order, with their exact types."""
    writer.add_uint32("general.file_type", int(_FILE_TYPES[dtype]))
    description = f"{DESCRIPTION} (omni_app tiny random-weight stand-in)" if tiny_demo else DESCRIPTION
    writer.add_string("general.description", description)
    if tiny_demo:
        writer.add_bool(TINY_DEMO_KEY, True)
    writer.add_uint32("encoder_attention_heads", dims.n_head)
    writer.add_uint32("encoder_ffn_dim", dims.n_ffn)
    writer.add_uint32("encoder_layers", dims.n_layer)
    writer.add_uint32("num_hidden_layers", dims.n_layer)
    writer.add_uint32("d_model", dims.d_model)
    writer.add_uint32("audio_pool_step", dims.pool_step)
    writer.add_uint32("use_f16", int(dtype == "f16"))
    writer.add_uint32("n_mel", dims.n_mel)
    writer.add_uint32("n_fft", dims.n_bins)
    filters = mel_filters(dims.n_mel)
    writer.add_key_value(
        "filters", filters.ravel().tolist(), gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32
    )


def write_audio(
    path: Path, seed: int = 0, dtype: str = "f16", dims: AudioDims = TINY_AUDIO_DIMS, tiny_demo: bool = True
) -> Path:
    """Write the audio encoder GGUF to `path` (parent directories created; same arguments -> same bytes)."""
    weights = random_weights(seed, dims, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, ARCH)
    _add_metadata(writer, dims, dtype, tiny_demo)
    write_tensors_and_close(writer, weights)
    return path

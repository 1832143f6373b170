"""References for the audio input stage (tests only).

- `reference_mel(pcm)`: NumPy, float64, written from pipeline.md §4.1 steps 2-5 (the definition the engine's
  mel frontend implements). `librosa_mel(pcm)` computes the same definition through librosa's STFT and mel
  code; tests/parity/test_mel_reference.py holds the two together.
- `reference_audio_model(path)`: the PyTorch audio model of the GGUF file — transformers' Whisper encoder
  modules (conv stem, `WhisperEncoderLayer`s, final LayerNorm; exact erf GELU, LayerNorm eps 1e-5, eager
  attention) holding the file's weights, then the projector (Linear, ReLU, Linear) and AvgPool1d(5, 5).
  `WhisperEncoder.forward` only accepts 3000-frame inputs, so `AudioReference.encode` runs its modules itself
  (what the MiniCPM-o PyTorch encoder does): the same layers, positional rows [offset, offset + T_mel/2).
- `reference_streaming_embeddings(model, mels)`: chunks encoded one after another with the PyTorch
  reference's encoder cache (pipeline.md §4.2), attention written out explicitly from the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hf_reference import read_tensor
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from omni_app.config import GgufHeader, read_gguf_header

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_BINS = 1 + N_FFT // 2
PAD_UNIT = 1600  # samples: inputs are zero-padded to a multiple of 100 ms
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below the clip's maximum
POOL = 5


# ---- mel ------------------------------------------------------------------------------------------


def default_mel_filters() -> np.ndarray:
    """librosa's Slaney mel bank (80, 201) float32 — the values the audio GGUF's `filters` key holds."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=80)


def mel_filters_from_gguf(path: Path) -> np.ndarray:
    """The `filters` key of an audio GGUF as float32 (n_mel, n_fft-key bins)."""
    header = read_gguf_header(path)
    n_mel, n_bins = header.value("n_mel", 80), header.value("n_fft", N_BINS)
    return np.asarray(header.value("filters"), dtype=np.float32).reshape(n_mel, n_bins)


def pad_to_unit(pcm16k: np.ndarray) -> np.ndarray:
    """float64 samples zero-padded at the end to a multiple of 1600 (at least 1600)."""
    samples = np.asarray(pcm16k, dtype=np.float64).ravel()
    padded_length = max(PAD_UNIT, -(-samples.size // PAD_UNIT) * PAD_UNIT)
    return np.concatenate([samples, np.zeros(padded_length - samples.size)])


def periodic_hann(length: int = N_FFT) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def power_spectrogram(samples: np.ndarray) -> np.ndarray:
    """(201, len/160) |STFT|^2 of already padded samples: 200 reflected samples before, 200 zeros after,
    frames every 160 samples, the last frame (the one starting at len) dropped."""
    half = N_FFT // 2
    centred = np.concatenate([samples[half:0:-1], samples, np.zeros(half)])
    n_frames = samples.size // HOP
    starts = HOP * np.arange(n_frames)
    frames = centred[starts[:, None] + np.arange(N_FFT)[None, :]] * periodic_hann()
    spectrum = np.fft.rfft(frames, n=N_FFT, axis=1)
    return (spectrum.real**2 + spectrum.imag**2).T


def normalise_log_mel(mel: np.ndarray) -> np.ndarray:
    """log10 with the 1e-10 floor, clamp to >= (clip max - 8), then (x + 4) / 4."""
    log_mel = np.log10(np.maximum(mel, LOG_FLOOR))
    log_mel = np.maximum(log_mel, log_mel.max() - DYNAMIC_RANGE)
    return (log_mel + 4.0) / 4.0


def reference_mel(pcm16k: np.ndarray, filters: np.ndarray | None = None) -> np.ndarray:
    """float64 (n_mel, T) normalised log-mel of mono 16 kHz samples (pipeline.md §4.1 steps 2-5);
    T = padded samples / 160. `filters` (n_mel, 201) defaults to librosa's bank (= the GGUF's)."""
    bank = default_mel_filters() if filters is None else filters
    power = power_spectrogram(pad_to_unit(pcm16k))
    return normalise_log_mel(np.asarray(bank, dtype=np.float64) @ power)


def librosa_mel(pcm16k: np.ndarray) -> np.ndarray:
    """The same definition through librosa: manual padding as §4.1 says, then `librosa.stft`
    (center=False, scipy's periodic 'hann') and `librosa.feature.melspectrogram` (its own Slaney bank)."""
    import librosa

    samples = pad_to_unit(pcm16k)
    half = N_FFT // 2
    centred = np.pad(np.pad(samples, (half, 0), mode="reflect"), (0, half), mode="constant")
    stft = librosa.stft(centred, n_fft=N_FFT, hop_length=HOP, window="hann", center=False)
    power = np.abs(stft[:, : samples.size // HOP]) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=80, dtype=np.float64)
    return normalise_log_mel(mel)


def mel_frames(n_samples: int) -> int:
    """Mel frames produced for `n_samples` input samples (after the 100 ms padding)."""
    return pad_to_unit(np.zeros(n_samples)).size // HOP


# ---- encoder + projector + pool -------------------------------------------------------------------

_LAYER_NAMES = {
    "attn_ln": "self_attn_layer_norm",
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "mlp_ln": "final_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
}
_GLOBAL_NAMES = {
    "encoder.conv1": "encoder.conv1",
    "encoder.conv2": "encoder.conv2",
    "encoder.positional_embedding": "encoder.embed_positions.weight",
    "encoder.ln_post": "encoder.layer_norm",
    "audio_projector.linear1": "linear1",
    "audio_projector.linear2": "linear2",
}


def torch_name(gguf_name: str) -> str:
    """GGUF tensor name -> parameter name in `AudioReference` (model-files.md §5.3 mapping, reversed)."""
    if gguf_name.startswith("encoder.blocks."):
        _, _, layer, rest = gguf_name.split(".", 3)
        module, param = rest.rsplit(".", 1)
        return f"encoder.layers.{layer}.{_LAYER_NAMES[module]}.{param}"
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    module, param = gguf_name.rsplit(".", 1)
    return f"{_GLOBAL_NAMES[module]}.{param}"


def whisper_config(header: GgufHeader) -> WhisperConfig:
    config = WhisperConfig(
        d_model=header.value("d_model"),
        encoder_layers=header.value("encoder_layers"),
        encoder_attention_heads=header.value("encoder_attention_heads"),
        encoder_ffn_dim=header.tensors["encoder.blocks.0.mlp.0.weight"].ne[1],
        num_mel_bins=header.value("n_mel", 80),
        max_source_positions=header.tensors["encoder.positional_embedding"].ne[1],
        activation_function="gelu",  # exact erf GELU, as the PyTorch model (OMNI's ggml uses tanh)
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    config._attn_implementation = "eager"
    return config


class AudioReference(nn.Module):
    """Whisper encoder + projector (Linear, ReLU, Linear) + AvgPool1d(5, 5): mel (80, T) -> rows (n, out)."""

    def __init__(self, config: WhisperConfig, projector_hidden: int, projector_out: int) -> None:
        super().__init__()
        self.encoder = WhisperEncoder(config)
        self.linear1 = nn.Linear(config.d_model, projector_hidden)
        self.linear2 = nn.Linear(projector_hidden, projector_out)

    def encode(self, mel: torch.Tensor, position_offset: int = 0) -> torch.Tensor:
        """(n_mel, T) -> encoder states (T_cnn, d_model), T_cnn = (T - 1) // 2 + 1, with positional rows
        [position_offset, position_offset + T_cnn)."""
        encoder = self.encoder
        hidden = nn.functional.gelu(encoder.conv1(mel.unsqueeze(0)))
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        end = position_offset + hidden.shape[1]
        if end > encoder.embed_positions.num_embeddings:
            raise ValueError(f"positions [{position_offset}, {end}) exceed the positional table")
        hidden = hidden + encoder.embed_positions.weight[position_offset:end]
        for layer in encoder.layers:
            hidden = layer(hidden, None)
        return encoder.layer_norm(hidden)[0]

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """(T_cnn, d_model) -> pooled LLM rows (n, out), n = (T_cnn - 5) // 5 + 1 (0 when T_cnn < 5)."""
        rows = self.linear2(nn.functional.relu(self.linear1(states)))
        if rows.shape[0] < POOL:
            return rows[:0]
        return nn.functional.avg_pool1d(rows.T.unsqueeze(0), kernel_size=POOL, stride=POOL)[0].T

    def forward(self, mel: torch.Tensor, position_offset: int = 0) -> torch.Tensor:
        return self.project(self.encode(mel, position_offset))


def reference_audio_model(gguf_path: Path, dtype: torch.dtype = torch.float32) -> AudioReference:
    """`AudioReference` in `dtype` (eval mode) holding exactly the GGUF's weights (F16 widened)."""
    header = read_gguf_header(gguf_path)
    model = AudioReference(
        whisper_config(header),
        projector_hidden=header.tensors["audio_projector.linear1.weight"].ne[1],
        projector_out=header.tensors["audio_projector.linear2.weight"].ne[1],
    )
    state = {torch_name(name): torch.from_numpy(read_tensor(header, name)) for name in header.tensors}
    for conv in ("encoder.conv1.bias", "encoder.conv2.bias"):
        state[conv] = state[conv].reshape(-1)  # stored (C, 1)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssertionError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    return model.to(dtype).eval()


@torch.no_grad()
def reference_audio_embeddings(
    model: AudioReference, mel: np.ndarray, position_offset: int = 0
) -> np.ndarray:
    """float32 (n, out) LLM rows for a (n_mel, T) mel, computed in the model's dtype."""
    dtype = next(model.parameters()).dtype
    return model(torch.as_tensor(np.asarray(mel), dtype=dtype), position_offset).float().numpy()


@torch.no_grad()
def reference_encoder_states(model: AudioReference, mel: np.ndarray, position_offset: int = 0) -> np.ndarray:
    """float32 (T_cnn, d_model) encoder output (after ln_post, before the projector) for debugging."""
    dtype = next(model.parameters()).dtype
    return model.encode(torch.as_tensor(np.asarray(mel), dtype=dtype), position_offset).float().numpy()


def audio_rows(n_mel_frames: int) -> int:
    """LLM rows for `n_mel_frames` (PY formula: T_cnn = (T - 1) // 2 + 1, n = (T_cnn - 5) // 5 + 1)."""
    t_cnn = (n_mel_frames - 1) // 2 + 1
    return max(0, (t_cnn - POOL) // POOL + 1)


# ---- streaming encoder (PyTorch reference's cache semantics, pipeline.md §4.2) --------------------


class _StreamingEncoderCache:
    """Per-layer keys/values of every chunk since the last reset, and the positions they occupy."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.reset()

    def reset(self) -> None:
        self.keys: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        self.values: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        self.length = 0


def _linear(x: torch.Tensor, module: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    bias = None if module.bias is None else module.bias.to(dtype)
    return nn.functional.linear(x, module.weight.to(dtype), bias)


def _layer_norm(x: torch.Tensor, module: nn.LayerNorm, dtype: torch.dtype) -> torch.Tensor:
    return nn.functional.layer_norm(
        x, module.normalized_shape, module.weight.to(dtype), module.bias.to(dtype), module.eps
    )


def _conv_gelu(x: torch.Tensor, conv: nn.Conv1d, dtype: torch.dtype) -> torch.Tensor:
    weight, bias = conv.weight.to(dtype), conv.bias.to(dtype)
    return nn.functional.gelu(nn.functional.conv1d(x, weight, bias, conv.stride, conv.padding))


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(T, d) -> (heads, T, d / heads)."""
    return x.reshape(x.shape[0], n_heads, -1).transpose(0, 1)


def _cached_self_attention(
    normed: torch.Tensor, layer: nn.Module, index: int, cache: _StreamingEncoderCache, dtype: torch.dtype
) -> torch.Tensor:
    """Queries from this chunk; keys/values = this layer's cached ones followed by this chunk's (no mask).
    Appends this chunk's keys/values to the cache."""
    attention = layer.self_attn
    n_heads = attention.num_heads
    head_dim = normed.shape[1] // n_heads
    queries = _linear(normed, attention.q_proj, dtype) * head_dim**-0.5
    cache.keys[index].append(_linear(normed, attention.k_proj, dtype))
    cache.values[index].append(_linear(normed, attention.v_proj, dtype))
    keys = _split_heads(torch.cat(cache.keys[index]), n_heads)
    values = _split_heads(torch.cat(cache.values[index]), n_heads)
    weights = torch.softmax(_split_heads(queries, n_heads) @ keys.transpose(1, 2), dim=-1)
    mixed = (weights @ values).transpose(0, 1).reshape(normed.shape)
    return _linear(mixed, attention.out_proj, dtype)


def _streaming_layer(
    x: torch.Tensor, layer: nn.Module, index: int, cache: _StreamingEncoderCache, dtype: torch.dtype
) -> torch.Tensor:
    """Pre-LN block: x + out(attn(LN1 x)); then x + fc2(gelu(fc1(LN2 x))) with the exact erf GELU."""
    normed = _layer_norm(x, layer.self_attn_layer_norm, dtype)
    x = x + _cached_self_attention(normed, layer, index, cache, dtype)
    hidden = nn.functional.gelu(_linear(_layer_norm(x, layer.final_layer_norm, dtype), layer.fc1, dtype))
    return x + _linear(hidden, layer.fc2, dtype)


def _streaming_chunk(
    model: AudioReference, mel: torch.Tensor, cache: _StreamingEncoderCache, max_positions: int
) -> torch.Tensor:
    """One chunk: conv stem on the chunk alone, reset if it would reach `max_positions`, positions from the
    cached length, cached attention, final LN, projector, pool. Returns (rows, out)."""
    encoder, dtype = model.encoder, mel.dtype
    frames = _conv_gelu(_conv_gelu(mel.unsqueeze(0), encoder.conv1, dtype), encoder.conv2, dtype)[0].T
    n_frames = frames.shape[0]
    if n_frames > max_positions:
        raise ValueError(f"a chunk of {n_frames} encoder frames does not fit {max_positions} positions")
    if cache.length + n_frames >= max_positions:
        cache.reset()
    x = frames + encoder.embed_positions.weight[cache.length : cache.length + n_frames].to(dtype)
    for index, layer in enumerate(encoder.layers):
        x = _streaming_layer(x, layer, index, cache, dtype)
    cache.length += n_frames
    states = _layer_norm(x, encoder.layer_norm, dtype)
    rows = _linear(nn.functional.relu(_linear(states, model.linear1, dtype)), model.linear2, dtype)
    if n_frames < POOL:
        return rows[:0]
    return nn.functional.avg_pool1d(rows.T.unsqueeze(0), kernel_size=POOL, stride=POOL)[0].T


@torch.no_grad()
def reference_streaming_embeddings(
    model: AudioReference,
    mels: list[np.ndarray],
    max_positions: int = 1500,
    dtype: torch.dtype = torch.float32,
) -> list[np.ndarray]:
    """float32 LLM rows per chunk for chunks encoded one after another with the PyTorch reference's encoder
    cache (pipeline.md §4.2, not the C++ one of §4.1 step 9 / §11.5): each chunk's (n_mel, T_i) mel goes
    through the conv stem alone (no context frames) giving T2_i = (T_i - 1) // 2 + 1 frames; when
    cached + T2_i >= `max_positions` the cache is emptied first; the chunk takes positions
    [cached, cached + T2_i) and every layer attends (unmasked) over its own cached keys/values of the
    chunks since the last reset plus the chunk's own. Computed explicitly from the layers' weights in
    `dtype`."""
    if max_positions > model.encoder.embed_positions.num_embeddings:
        raise ValueError(f"max_positions {max_positions} exceeds the positional table")
    cache = _StreamingEncoderCache(len(model.encoder.layers))
    chunks = (torch.as_tensor(np.asarray(mel), dtype=dtype) for mel in mels)
    return [_streaming_chunk(model, mel, cache, max_positions).float().numpy() for mel in chunks]

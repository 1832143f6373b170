"""The PyTorch audio reference (tests/audio_reference.py) itself, before the engine is compared with it:
weights land where model-files.md §5.3 says, its forward equals transformers' own `WhisperEncoder.forward`
on the 3000-frame input that method accepts, the projector/pool equals a NumPy computation, row counts follow
pipeline.md §4.1 step 7, GELU is the exact one, and float32 is close enough to float64 to serve as truth.
The streaming reference (PyTorch encoder-cache semantics, pipeline.md §4.2) equals the one-shot reference on
one chunk, equals transformers' layers run over all chunks' frames with a block-causal mask, and resets where
§4.2 says."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_reference import (
    AudioReference,
    audio_rows,
    reference_audio_embeddings,
    reference_audio_model,
    reference_encoder_states,
    reference_mel,
    reference_streaming_embeddings,
)
from hf_reference import read_tensor

from omni_app.config import read_gguf_header

AUDIO = "audio/MiniCPM-o-4_5-audio-F16.gguf"

# model-files.md §5.3: GGUF name -> HF parameter (without the `apm.` / `audio_projection_layer.` prefix, as
# AudioReference names them under `encoder.` and at the top level).
SECTION_5_3 = {
    "encoder.conv1.weight": "encoder.conv1.weight",
    "encoder.conv1.bias": "encoder.conv1.bias",
    "encoder.conv2.weight": "encoder.conv2.weight",
    "encoder.conv2.bias": "encoder.conv2.bias",
    "encoder.positional_embedding": "encoder.embed_positions.weight",
    "encoder.ln_post.weight": "encoder.layer_norm.weight",
    "encoder.ln_post.bias": "encoder.layer_norm.bias",
    "audio_projector.linear1.weight": "linear1.weight",
    "audio_projector.linear1.bias": "linear1.bias",
    "audio_projector.linear2.weight": "linear2.weight",
    "audio_projector.linear2.bias": "linear2.bias",
}
for _i in range(2):
    _block, _layer = f"encoder.blocks.{_i}", f"encoder.layers.{_i}"
    SECTION_5_3 |= {
        f"{_block}.attn_ln.weight": f"{_layer}.self_attn_layer_norm.weight",
        f"{_block}.attn_ln.bias": f"{_layer}.self_attn_layer_norm.bias",
        f"{_block}.attn.query.weight": f"{_layer}.self_attn.q_proj.weight",
        f"{_block}.attn.query.bias": f"{_layer}.self_attn.q_proj.bias",
        f"{_block}.attn.key.weight": f"{_layer}.self_attn.k_proj.weight",
        f"{_block}.attn.value.weight": f"{_layer}.self_attn.v_proj.weight",
        f"{_block}.attn.value.bias": f"{_layer}.self_attn.v_proj.bias",
        f"{_block}.attn.out.weight": f"{_layer}.self_attn.out_proj.weight",
        f"{_block}.attn.out.bias": f"{_layer}.self_attn.out_proj.bias",
        f"{_block}.mlp_ln.weight": f"{_layer}.final_layer_norm.weight",
        f"{_block}.mlp_ln.bias": f"{_layer}.final_layer_norm.bias",
        f"{_block}.mlp.0.weight": f"{_layer}.fc1.weight",
        f"{_block}.mlp.0.bias": f"{_layer}.fc1.bias",
        f"{_block}.mlp.2.weight": f"{_layer}.fc2.weight",
        f"{_block}.mlp.2.bias": f"{_layer}.fc2.bias",
    }


@pytest.fixture(scope="module")
def audio_path(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / AUDIO


@pytest.fixture(scope="module")
def model(audio_path: Path) -> AudioReference:
    return reference_audio_model(audio_path)


def _mel(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    tone = (
        0.3
        * np.sin(2 * np.pi * 300 * np.arange(n) / 16000)
        * (1 + np.sin(2 * np.pi * 3 * np.arange(n) / 16000))
    )
    return reference_mel(tone + 0.05 * rng.standard_normal(n))


def _rel(value: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(value - expected).max() / np.abs(expected).max())


def test_every_parameter_holds_its_section_5_3_tensor(model: AudioReference, audio_path: Path) -> None:
    header = read_gguf_header(audio_path)
    parameters = dict(model.named_parameters())
    assert set(parameters) == set(SECTION_5_3.values())
    assert set(header.tensors) == set(SECTION_5_3)
    assert model.encoder.layers[0].self_attn.k_proj.bias is None
    for gguf_name, torch_name in SECTION_5_3.items():
        stored = read_tensor(header, gguf_name)
        if gguf_name.startswith("encoder.conv") and gguf_name.endswith(".bias"):
            stored = stored.reshape(-1)  # stored (C, 1)
        np.testing.assert_array_equal(parameters[torch_name].detach().numpy(), stored, err_msg=gguf_name)


def test_encode_equals_transformers_whisper_encoder_forward(model: AudioReference) -> None:
    mel = _mel(30.0)
    assert mel.shape == (80, 3000)  # the only length WhisperEncoder.forward accepts
    with torch.no_grad():
        expected = model.encoder(torch.as_tensor(mel, dtype=torch.float32)[None]).last_hidden_state[0]
    states = reference_encoder_states(model, mel)
    assert states.shape == (1500, 64)
    assert _rel(states, expected.numpy()) <= 1e-6


def test_projector_and_pool_equal_numpy(model: AudioReference, audio_path: Path) -> None:
    header = read_gguf_header(audio_path)
    w1, b1 = (
        read_tensor(header, f"audio_projector.linear1.{p}").astype(np.float64) for p in ("weight", "bias")
    )
    w2, b2 = (
        read_tensor(header, f"audio_projector.linear2.{p}").astype(np.float64) for p in ("weight", "bias")
    )
    mel = _mel(1.23)  # 1.3 s after padding: 130 mel frames, 65 encoder frames, 13 rows
    states = reference_encoder_states(model, mel).astype(np.float64)
    projected = np.maximum(states @ w1.T + b1, 0.0) @ w2.T + b2
    expected = projected[: 13 * 5].reshape(13, 5, -1).mean(axis=1)
    rows = reference_audio_embeddings(model, mel)
    assert rows.shape == (13, 128) and rows.dtype == np.float32
    assert _rel(rows, expected) <= 1e-6


@pytest.mark.parametrize(
    ("mel_frames", "rows"), [(10, 1), (100, 10), (610, 61), (1000, 100), (8, 0), (9, 1), (21, 2), (29, 3)]
)
def test_row_count_follows_the_pytorch_formula(model: AudioReference, mel_frames: int, rows: int) -> None:
    assert audio_rows(mel_frames) == rows
    mel = _mel(10.0)[:, :mel_frames]
    assert reference_audio_embeddings(model, mel).shape == (rows, 128)


def test_gelu_is_exact_erf(model: AudioReference) -> None:
    activation = model.encoder.layers[0].activation_fn
    x = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in (1.0, -0.5)]
    np.testing.assert_allclose(activation(x).numpy(), exact, rtol=1e-15)
    tanh = torch.nn.functional.gelu(x, approximate="tanh").numpy()
    assert np.abs(activation(x).numpy() - tanh).max() > 1e-5


def test_position_offset_selects_positional_rows(model: AudioReference) -> None:
    mel = _mel(1.0)
    base = reference_encoder_states(model, mel)
    shifted = reference_encoder_states(model, mel, position_offset=50)
    assert _rel(shifted, base) > 0.1
    assert reference_encoder_states(model, mel, position_offset=1450).shape == (50, 64)
    with pytest.raises(ValueError, match=r"positions \[1451, 1501\) exceed the positional table"):
        reference_encoder_states(model, mel, position_offset=1451)


@pytest.mark.parametrize(("seconds", "rows"), [(0.05, 1), (1.0, 10), (6.016, 61), (10.0, 100)])
def test_float32_reference_is_close_to_float64(
    model: AudioReference, audio_path: Path, seconds: float, rows: int
) -> None:
    mel = _mel(seconds)
    rows64 = reference_audio_embeddings(reference_audio_model(audio_path, torch.float64), mel)
    rows32 = reference_audio_embeddings(model, mel)
    assert rows32.shape == (rows, 128)
    assert _rel(rows32, rows64) <= 1e-5
    assert float(rows32.std()) > 0.05  # not collapsed by the ReLU or the pooling


# ---- streaming reference --------------------------------------------------------------------------


def _stem(model: AudioReference, mel: np.ndarray) -> torch.Tensor:
    """Conv stem of one chunk through the model's own conv modules: (T2, d_model)."""
    encoder = model.encoder
    hidden = torch.nn.functional.gelu(encoder.conv1(torch.as_tensor(mel, dtype=torch.float32)[None]))
    return torch.nn.functional.gelu(encoder.conv2(hidden))[0].T


@torch.no_grad()
def _block_causal_rows(model: AudioReference, mels: list[np.ndarray]) -> list[np.ndarray]:
    """Independent statement of the cache semantics: all chunks' frames (each chunk's conv stem run alone) at
    positions [0, total), through transformers' `WhisperEncoderLayer`s with an additive mask letting a frame
    of chunk i see exactly the frames of chunks 0..i; then per chunk final LN, projector and pool."""
    frames = [_stem(model, mel) for mel in mels]
    chunk_of = torch.cat([torch.full((f.shape[0],), i) for i, f in enumerate(frames)])
    blocked = chunk_of[None, :] > chunk_of[:, None]  # key chunk later than query chunk
    mask = torch.zeros(blocked.shape).masked_fill(blocked, torch.finfo(torch.float32).min)[None, None]
    hidden = torch.cat(frames) + model.encoder.embed_positions.weight[: chunk_of.numel()]
    hidden = hidden[None]
    for layer in model.encoder.layers:
        hidden = layer(hidden, mask)
    states = model.encoder.layer_norm(hidden)[0]
    return [model.project(states[chunk_of == i]).numpy() for i in range(len(mels))]


def _chunk_mels(seconds: list[float]) -> list[np.ndarray]:
    return [_mel(s, seed=i + 1) for i, s in enumerate(seconds)]


@pytest.mark.parametrize("seconds", [0.05, 1.0, 6.016, 10.0, 30.0])
def test_streaming_single_chunk_equals_one_shot_reference(model: AudioReference, seconds: float) -> None:
    mel = _mel(seconds)
    (rows,) = reference_streaming_embeddings(model, [mel])
    expected = reference_audio_embeddings(model, mel)
    assert rows.shape == expected.shape == (audio_rows(mel.shape[1]), 128) and rows.dtype == np.float32
    assert _rel(rows, expected) <= 1e-6


def test_streaming_chunks_equal_block_causal_attention(model: AudioReference) -> None:
    # 1035 ms first chunk as the duplex reference, then 1 s, a 4-frame chunk (0 rows, still cached), odd sizes
    mels = _chunk_mels([1.035, 1.0, 0.05, 0.37, 2.0])
    mels[2] = mels[2][:, :8]
    chunks = reference_streaming_embeddings(model, mels)
    assert [c.shape for c in chunks] == [(audio_rows(m.shape[1]), 128) for m in mels]
    assert [c.shape[0] for c in chunks] == [11, 10, 0, 4, 20]
    for index, (rows, expected) in enumerate(zip(chunks, _block_causal_rows(model, mels), strict=True)):
        if rows.size:
            assert _rel(rows, expected) <= 1e-5, f"chunk {index}"


def test_streaming_is_deterministic(model: AudioReference) -> None:
    mels = _chunk_mels([1.0, 1.0, 0.5])
    first, second = (reference_streaming_embeddings(model, mels) for _ in range(2))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_streaming_later_chunk_depends_on_the_cache(model: AudioReference) -> None:
    first, second = _chunk_mels([1.0, 1.0])  # 50 encoder frames each
    _, cached = reference_streaming_embeddings(model, [first, second])
    alone_at_50 = reference_audio_embeddings(model, second, position_offset=50)
    alone_at_0 = reference_audio_embeddings(model, second)
    assert _rel(cached, alone_at_50) > 1e-2  # the attention over chunk 1's keys/values matters
    assert _rel(cached, alone_at_0) > 1e-2  # so does the position offset
    _, other_history = reference_streaming_embeddings(model, [_mel(1.0, seed=9), second])
    assert _rel(cached, other_history) > 1e-3  # and the cached contents, not only their length


@pytest.mark.parametrize(("second_seconds", "resets"), [(9.98, False), (10.0, True)])
def test_streaming_resets_before_a_chunk_reaching_1500_positions(
    model: AudioReference, second_seconds: float, resets: bool
) -> None:
    # 2000 mel frames -> 1000 encoder frames; then 998 -> 499 (ends at 1499: kept) or 1000 -> 500 (reset);
    # then 50, which resets after 1499 and joins the second chunk after 500
    mels = _chunk_mels([20.0, second_seconds, 1.0])
    mels[1] = mels[1][:, : int(round(second_seconds * 100))]
    assert [(m.shape[1] - 1) // 2 + 1 for m in mels] == [1000, 500 if resets else 499, 50]
    chunks = reference_streaming_embeddings(model, mels)
    second_alone = reference_audio_embeddings(model, mels[1])
    third_alone = reference_audio_embeddings(model, mels[2])
    if resets:
        assert _rel(chunks[1], second_alone) <= 1e-6
        assert _rel(chunks[2], _block_causal_rows(model, mels[1:])[1]) <= 1e-5
        assert _rel(chunks[2], third_alone) > 1e-2
    else:
        assert _rel(chunks[1], _block_causal_rows(model, mels[:2])[1]) <= 1e-5
        assert _rel(chunks[1], second_alone) > 1e-2
        assert _rel(chunks[2], third_alone) <= 1e-6


def test_streaming_max_positions_argument_moves_the_reset(model: AudioReference) -> None:
    # 50 encoder frames each; with 120 positions: 0-50, 50-100, then 100 + 50 >= 120 resets before chunk 2
    mels = _chunk_mels([1.0, 1.0, 1.0, 1.0])
    chunks = reference_streaming_embeddings(model, mels, max_positions=120)
    assert _rel(chunks[1], _block_causal_rows(model, mels[:2])[1]) <= 1e-5
    assert _rel(chunks[2], reference_audio_embeddings(model, mels[2])) <= 1e-6
    assert _rel(chunks[3], _block_causal_rows(model, mels[2:])[1]) <= 1e-5
    default = reference_streaming_embeddings(model, mels)
    assert _rel(default[2], chunks[2]) > 1e-2


def test_streaming_rejects_what_cannot_fit(model: AudioReference) -> None:
    with pytest.raises(ValueError, match="a chunk of 1501 encoder frames does not fit 1500 positions"):
        reference_streaming_embeddings(model, [_mel(31.0)[:, :3001]])
    with pytest.raises(ValueError, match="max_positions 1501 exceeds the positional table"):
        reference_streaming_embeddings(model, [_mel(1.0)], max_positions=1501)


def test_streaming_float32_is_close_to_float64(model: AudioReference) -> None:
    mels = _chunk_mels([1.035, 1.0, 0.37, 3.0])
    rows32 = reference_streaming_embeddings(model, mels)
    rows64 = reference_streaming_embeddings(model, mels, dtype=torch.float64)
    for a, b in zip(rows32, rows64, strict=True):
        assert _rel(a, b) <= 1e-5

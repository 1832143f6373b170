"""PyTorch reference of the Token2Wav flow (token encoder + DiT + CFM) for a tiny model directory (tests
only).

- `build_flow(model_dir, noise, n_timesteps)`: stepaudio2-minicpmo 0.1.1's `CausalMaskedDiffWithXvec` built
  with the tiny dims of `omni_app.tiny_models.token2wav` (token2wav.md §8.2) and the weights of the
  directory's `encoder.gguf` ("encoder." prefix), `flow_matching.gguf` ("decoder." prefix) and
  `flow_extra.gguf`, loaded with strict=True; eval mode, float32. §8.2 fix 1: the DiT and CFM cache buffers,
  which hard-code the real model's shapes, are replaced by zeros of the tiny shapes (NT slots); fix 2: the
  CFM noise buffer becomes `noise` (the engine's `Token2Mel.noise`, (80, N)).
- `load_prompt_caches(path)`: `prompt_cache.gguf` -> the speaker vector and the four stream caches in the
  PyTorch layouts of `flow.inference_chunk` (token2wav.md §5.2, §6).
- `trim_caches` (the engine's policy: prompt + newest frames) and `trim_caches_sa` (stepaudio2-minicpmo 0.1.1
  `Token2wav.stream`: the first P and the last 100 entries of every cache as stored).
- `write_sharpened_encoder(src, dst)`: a copy of a model directory whose encoder attention is sharper and
  position-dependent (with N(0, 0.05²) weights the relative-position term barely moves the mel).
- `stream_windows(tokens)`: the 28 / stride 25 windows of one stream (token2wav.md §5.1).
- `reference_windows(flow, prompt, windows)`: `inference_chunk` per window with cloned caches (the reference
  returns views into its buffers) and trimming between windows.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from stepaudio_modules import load_reference

from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.llm import TINY_DEMO_KEY
from omni_app.tiny_models.token2wav import (
    ENCODER_FILE,
    FLOW_EXTRA_FILE,
    FLOW_MATCHING_FILE,
    N_CFG_ROWS,
    N_MELS,
    N_SPEECH_CODES,
    PROMPT_CACHE_FILE,
    PROMPT_CACHE_KEY_PREFIX,
    PROMPT_CACHE_PREFIX,
    SPK_DIM,
    TINY_TOKEN2WAV_DIMS,
    TOKEN2WAV_DIR,
    Token2WavDims,
)

CFG_RATE = 0.7
SILENCE_TOKEN = 4218
LOOKAHEAD = 3
WINDOW_TOKENS = 28
WINDOW_STRIDE = 25
NEWEST_FRAMES = 100  # generated mel frames kept by the trimming rules
NEWEST_TOKENS = NEWEST_FRAMES // 2
MAX_CACHE_FRAMES = 512  # DiT/CFM buffer length: larger than any trimmed cache + one chunk (P + 100 + 56)
# Encoder attention scales of the sharpened variant: scores x16, positional term x8 (a one-frame shift of the
# relative positions then moves the mel by ~2e-3 instead of ~3e-5).
SHARPEN_QK = 4.0
SHARPEN_POSITIONS = 8.0
CACHE_NAMES = ("conformer_cnn_cache", "conformer_att_cache", "estimator_cnn_cache", "estimator_att_cache")

Caches = dict[str, torch.Tensor]
Window = tuple[list[int], bool]  # (tokens, last)
TrimRule = Callable[[Caches, int], Caches]


@dataclass
class PromptCache:
    caches: Caches  # PyTorch layouts, see load_prompt_caches
    spk: torch.Tensor  # (1, 192): the raw speaker vector (the flow normalises it)
    n_timesteps: int

    @property
    def prompt_frames(self) -> int:
        return int(self.caches["estimator_att_cache"].shape[4])


@dataclass
class WindowResult:
    mel: np.ndarray  # (80, 2n)
    caches: dict[str, np.ndarray]  # after the window (and after trimming when it is not the last)
    noise_offset: int  # estimator cache length the window started from


def t2w_dir(model_dir: Path) -> Path:
    return Path(model_dir) / TOKEN2WAV_DIR


def _reader_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file as float32 numpy, shape = reversed ne."""
    return {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(path).tensors}


def _reader_int(path: Path, key: str) -> int:
    field = gguf.GGUFReader(path).fields[key]
    return int(field.parts[field.data[0]][0])


def _state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    files = ((ENCODER_FILE, "encoder."), (FLOW_MATCHING_FILE, "decoder."), (FLOW_EXTRA_FILE, ""))
    state: dict[str, torch.Tensor] = {}
    for relpath, prefix in files:
        for name, array in _reader_tensors(Path(model_dir) / relpath).items():
            state[prefix + name] = torch.from_numpy(array)
    return state


def _make_flow(dims: Token2WavDims, n_timesteps: int) -> torch.nn.Module:
    ref = load_reference()
    enc, dit = dims.encoder, dims.dit
    encoder = ref.UpsampleConformerEncoderV2(
        input_size=enc.width,
        output_size=enc.width,
        pre_lookahead_len=enc.pre_lookahead,
        num_blocks=enc.n_blocks,
        num_up_blocks=enc.n_up_blocks,
        up_stride=enc.up_stride,
        up_scale_factor=enc.up_stride,
        attention_heads=enc.n_heads,
        linear_units=enc.n_units,
        key_bias=True,
        normalize_before=True,
    )
    estimator = ref.DiT(
        in_channels=4 * N_MELS,
        out_channels=N_MELS,
        mlp_ratio=dit.mlp_hidden / dit.hidden,
        depth=dit.depth,
        num_heads=dit.n_heads,
        head_dim=dit.head_dim,
        hidden_size=dit.hidden,
    )
    # The CFM allocates a 2.1 GB cache store for the real model's shapes at construction; build its buffers on
    # the meta device (it has no parameters of its own) and replace them below.
    with torch.device("meta"):
        decoder = ref.CausalConditionalCFM(estimator, inference_cfg_rate=CFG_RATE)
    _resize_cache_buffers(estimator, decoder, dims, n_timesteps)
    return ref.CausalMaskedDiffWithXvec(
        input_size=enc.width,
        output_size=N_MELS,
        spk_embed_dim=SPK_DIM,
        vocab_size=N_SPEECH_CODES,
        encoder=encoder,
        decoder=decoder,
    )


def _resize_cache_buffers(
    estimator: torch.nn.Module, decoder: torch.nn.Module, dims: Token2WavDims, n_timesteps: int
) -> None:
    """token2wav.md §8.2 fix 1, with NT slots in the CFM store so that its estimator caches have NT slots."""
    dit = dims.dit
    att = (dit.depth, N_CFG_ROWS, dit.n_heads, MAX_CACHE_FRAMES, 2 * dit.head_dim)
    cnn = (dit.depth, N_CFG_ROWS, 2 * dit.hidden, 2)
    estimator.att_cache_buffer = torch.zeros(att)
    estimator.cnn_cache_buffer = torch.zeros(cnn)
    decoder.att_cache_buffer = torch.zeros((n_timesteps, *att))
    decoder.cnn_cache_buffer = torch.zeros((n_timesteps, *cnn))


def build_flow(
    model_dir: Path, noise: np.ndarray, n_timesteps: int, dims: Token2WavDims = TINY_TOKEN2WAV_DIMS
) -> torch.nn.Module:
    """The reference flow holding the directory's weights; `noise` (80, N) becomes the CFM noise buffer."""
    flow = _make_flow(dims, n_timesteps)
    flow.load_state_dict(_state_dict(model_dir), strict=True)
    flow.decoder.rand_noise = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32))[None]
    return flow.float().eval()


def write_sharpened_encoder(src_model_dir: Path, dst_model_dir: Path) -> Path:
    """Copy the token2wav folder of `src_model_dir` to `dst_model_dir` with the encoder's linear_q/linear_k
    scaled by SHARPEN_QK and linear_pos/pos_bias_u/pos_bias_v by SHARPEN_POSITIONS; returns the new folder."""
    dst = t2w_dir(dst_model_dir)
    shutil.copytree(t2w_dir(src_model_dir), dst)
    tensors = _reader_tensors(Path(src_model_dir) / ENCODER_FILE)
    for name in tensors:
        part = name.split(".")[-2]
        if part in ("linear_q", "linear_k"):
            tensors[name] = tensors[name] * np.float32(SHARPEN_QK)
        elif part == "linear_pos" or name.endswith(("pos_bias_u", "pos_bias_v")):
            tensors[name] = tensors[name] * np.float32(SHARPEN_POSITIONS)
    writer = gguf.GGUFWriter(Path(dst_model_dir) / ENCODER_FILE, "")
    writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # like the tiny writer: no architecture key
    writer.add_bool(TINY_DEMO_KEY, True)
    write_tensors_and_close(writer, tensors)
    return dst


def load_prompt_caches(path: Path) -> PromptCache:
    """prompt_cache.gguf (ggml layouts of token2wav.md §6, numpy shape = ne reversed) -> PyTorch layouts:
    conformer_cnn_cache (1, W, 6) from (1, 6, W); conformer_att_cache (layers, 1, heads, L, 2*hd) from
    (layers, heads, L, 2*hd); estimator_cnn_cache (NT, depth, rows, 2*hidden, 2) from the row-outermost
    (rows, NT*depth, 2, 2*hidden) with slot = step*depth + block; estimator_att_cache
    (NT, depth, rows, heads, L, 2*hd) from (rows, NT*depth*heads, L, 2*hd) with index slot*heads + head."""
    tensors = {name.removeprefix(PROMPT_CACHE_PREFIX): t for name, t in _reader_tensors(path).items()}
    n_timesteps = _reader_int(path, f"{PROMPT_CACHE_KEY_PREFIX}n_timesteps")
    conformer_att = tensors["conformer_att_cache"]
    est_cnn = tensors["estimator_cnn_cache"]
    rows, slots, frames, channels = est_cnn.shape
    depth = slots // n_timesteps
    est_cnn = est_cnn.reshape(rows, n_timesteps, depth, frames, channels).transpose(1, 2, 0, 4, 3)
    est_att = tensors["estimator_att_cache"]
    rows, slot_heads, length, width = est_att.shape
    heads = slot_heads // (n_timesteps * depth)
    est_att = est_att.reshape(rows, n_timesteps, depth, heads, length, width).transpose(1, 2, 0, 3, 4, 5)
    arrays = {
        "conformer_cnn_cache": tensors["conformer_cnn_cache"].transpose(0, 2, 1),
        "conformer_att_cache": conformer_att[:, None],
        "estimator_cnn_cache": est_cnn,
        "estimator_att_cache": est_att,
    }
    caches = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
    spk = torch.from_numpy(tensors["spk_cb"].reshape(1, SPK_DIM).copy())
    return PromptCache(caches=caches, spk=spk, n_timesteps=n_timesteps)


def trim_caches(
    cache: Caches, prompt_frames: int, n_token_layers: int = TINY_TOKEN2WAV_DIMS.encoder.n_blocks
) -> Caches:
    """The engine's policy (t2w_api.md), applied after a non-final window when L > P + 100: conformer token
    layers keep the P/2 prompt tokens + the newest 50 tokens (repacked [c ; c]), mel layers P + the newest 100
    frames; the newest-first estimator cache keeps its newest 100 entries and the last P (the prompt)."""
    p, conformer, estimator = prompt_frames, cache["conformer_att_cache"], cache["estimator_att_cache"]
    trimmed = dict(cache)
    if estimator.shape[4] > p + NEWEST_FRAMES:
        trimmed["estimator_att_cache"] = torch.cat(
            [estimator[..., :NEWEST_FRAMES, :], estimator[..., -p:, :]], dim=4
        )
    if conformer.shape[3] > p + NEWEST_FRAMES:
        tokens = conformer[:n_token_layers, :, :, : conformer.shape[3] // 2]
        tokens = torch.cat([tokens[..., : p // 2, :], tokens[..., -NEWEST_TOKENS:, :]], dim=3)
        frames = conformer[n_token_layers:]
        frames = torch.cat([frames[..., :p, :], frames[..., -NEWEST_FRAMES:, :]], dim=3)
        trimmed["conformer_att_cache"] = torch.cat([tokens.repeat(1, 1, 1, 2, 1), frames], dim=0)
    return trimmed


def trim_caches_sa(cache: Caches, prompt_frames: int) -> Caches:
    """stepaudio2-minicpmo 0.1.1 `Token2wav.stream`: when a cache is longer than P + 100, keep its first P and
    last 100 entries as stored (newest-first estimator cache; packed conformer cache, all layers alike)."""
    p, conformer, estimator = prompt_frames, cache["conformer_att_cache"], cache["estimator_att_cache"]
    trimmed = dict(cache)
    if estimator.shape[4] > p + NEWEST_FRAMES:
        trimmed["estimator_att_cache"] = torch.cat(
            [estimator[..., :p, :], estimator[..., -NEWEST_FRAMES:, :]], dim=4
        )
    if conformer.shape[3] > p + NEWEST_FRAMES:
        trimmed["conformer_att_cache"] = torch.cat(
            [conformer[..., :p, :], conformer[..., -NEWEST_FRAMES:, :]], dim=3
        )
    return trimmed


def stream_windows(tokens: Sequence[int], last_max: int = WINDOW_TOKENS - 1) -> list[Window]:
    """token2wav.md §5.1 on one stream's tokens (the 3 silence tokens included): a 28-token window while more
    than `last_max` tokens are buffered (the buffer then advances by 25), the rest as the last window
    (`last_max` 28 lets a full window be the last one)."""
    buffer, windows = list(tokens), []
    while len(buffer) > last_max:
        windows.append((buffer[:WINDOW_TOKENS], False))
        buffer = buffer[WINDOW_STRIDE:]
    windows.append((buffer, True))
    return windows


def _numpy_caches(cache: Caches) -> dict[str, np.ndarray]:
    return {name: cache[name].detach().numpy().copy() for name in CACHE_NAMES}


@torch.inference_mode()
def reference_windows(
    flow: torch.nn.Module, prompt: PromptCache, windows: Sequence[Window], trim: TrimRule = trim_caches
) -> list[WindowResult]:
    """Run `flow.inference_chunk` on each window from the prompt caches; `trim` runs after every non-final
    window on clones of the returned caches."""
    cache = {name: prompt.caches[name].clone() for name in CACHE_NAMES}
    results = []
    for tokens, last in windows:
        offset = int(cache["estimator_att_cache"].shape[4])
        mel, new_cache = flow.inference_chunk(
            torch.tensor([tokens], dtype=torch.int64),
            prompt.spk,
            cache,
            last_chunk=last,
            n_timesteps=prompt.n_timesteps,
        )
        cache = {name: new_cache[name].clone() for name in CACHE_NAMES}
        if not last:
            cache = trim(cache, prompt.prompt_frames)
        results.append(WindowResult(mel[0].numpy().copy(), _numpy_caches(cache), offset))
    return results


def prompt_cache_path(model_dir: Path) -> Path:
    return Path(model_dir) / PROMPT_CACHE_FILE

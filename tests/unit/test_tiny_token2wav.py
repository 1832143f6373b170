"""The five tiny Token2Wav GGUFs of `token2wav-gguf/` (model-files.md §8 names and layouts, tiny dims of
§9.2/§9.3 = token2wav.md §8.2): every tensor's name/ne/dtype against the spec's table written out here,
tensor counts, the prompt cache's keys with exact types, the value rules of token2wav.md §8.2 (non-zero DiT
adaLN/final layers, positive Snake α, a voiced F0), determinism; and their validation in omni_app.config
(messages name the file and the key, tensor or cross-file width at fault)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_files import sha256_of as _sha256
from gguf_files import tensor_values as _tensor

from omni_app import __main__ as cli
from omni_app.config import GgufHeader, read_gguf_header, validate_model_dir
from omni_app.tiny_models.gguf_io import write_tensors_and_close
from omni_app.tiny_models.token2wav import (
    FULL_TOKEN2WAV_DIMS,
    TINY_TOKEN2WAV_DIMS,
    DitDims,
    EncoderDims,
    HiftDims,
    PromptCacheDims,
    Token2WavDims,
    encoder_shapes,
    flow_extra_shapes,
    flow_matching_shapes,
    hifigan_shapes,
    prompt_cache_shapes,
    random_tensors,
    write_token2wav,
)

F32 = GGMLQuantizationType.F32
I32, KF32, BOOL = GGUFValueType.INT32, GGUFValueType.FLOAT32, GGUFValueType.BOOL
ENCODER, FLOW_MATCHING, FLOW_EXTRA = (
    "token2wav-gguf/encoder.gguf",
    "token2wav-gguf/flow_matching.gguf",
    "token2wav-gguf/flow_extra.gguf",
)
HIFIGAN, PROMPT_CACHE = "token2wav-gguf/hifigan2.gguf", "token2wav-gguf/prompt_cache.gguf"
FILES = (ENCODER, FLOW_MATCHING, FLOW_EXTRA, HIFIGAN, PROMPT_CACHE)
ATTRS = {
    ENCODER: "token2wav_encoder",
    FLOW_MATCHING: "token2wav_flow_matching",
    FLOW_EXTRA: "token2wav_flow_extra",
    HIFIGAN: "token2wav_hifigan",
    PROMPT_CACHE: "token2wav_prompt_cache",
}
NT, T = 10, 8  # the prompt cache's ODE steps and prompt mel frames

# ---- model-files.md §9.3, written out (GGUF ne order) --------------------------------------------


def _encoder_layer(prefix: str) -> dict[str, tuple[int, ...]]:
    layer = {
        f"{prefix}.self_attn.linear_pos.weight": (64, 64),
        f"{prefix}.self_attn.pos_bias_u": (16, 4),
        f"{prefix}.self_attn.pos_bias_v": (16, 4),
        f"{prefix}.feed_forward.w_1.weight": (64, 128),
        f"{prefix}.feed_forward.w_1.bias": (128,),
        f"{prefix}.feed_forward.w_2.weight": (128, 64),
        f"{prefix}.feed_forward.w_2.bias": (64,),
    }
    for part in ("q", "k", "v", "out"):
        layer |= {
            f"{prefix}.self_attn.linear_{part}.weight": (64, 64),
            f"{prefix}.self_attn.linear_{part}.bias": (64,),
        }
    for norm in ("norm_mha", "norm_ff"):
        layer |= {f"{prefix}.{norm}.weight": (64,), f"{prefix}.{norm}.bias": (64,)}
    return layer


EXPECTED_ENCODER = {
    "embed.out.0.weight": (64, 64),
    "embed.out.0.bias": (64,),
    "embed.out.1.weight": (64,),
    "embed.out.1.bias": (64,),
    "pre_lookahead_layer.conv1.weight": (4, 64, 64),
    "pre_lookahead_layer.conv1.bias": (64,),
    "pre_lookahead_layer.conv2.weight": (3, 64, 64),
    "pre_lookahead_layer.conv2.bias": (64,),
    "up_layer.conv.weight": (5, 64, 64),
    "up_layer.conv.bias": (64,),
    "up_embed.out.0.weight": (64, 64),
    "up_embed.out.0.bias": (64,),
    "up_embed.out.1.weight": (64,),
    "up_embed.out.1.bias": (64,),
    "after_norm.weight": (64,),
    "after_norm.bias": (64,),
}
for _prefix in ("encoders.0", "encoders.1", "up_encoders.0", "up_encoders.1"):
    EXPECTED_ENCODER |= _encoder_layer(_prefix)

EXPECTED_FLOW_MATCHING = {
    "estimator.t_embedder.mlp.0.weight": (256, 64),
    "estimator.t_embedder.mlp.0.bias": (64,),
    "estimator.t_embedder.mlp.2.weight": (64, 64),
    "estimator.t_embedder.mlp.2.bias": (64,),
    "estimator.in_proj.weight": (320, 64),
    "estimator.in_proj.bias": (64,),
    "estimator.final_layer.adaLN_modulation.1.weight": (64, 128),
    "estimator.final_layer.adaLN_modulation.1.bias": (128,),
    "estimator.final_layer.linear.weight": (64, 80),
    "estimator.final_layer.linear.bias": (80,),
}
for _block in range(2):
    _b = f"estimator.blocks.{_block}"
    for _part in ("to_q", "to_k", "to_v", "proj"):
        EXPECTED_FLOW_MATCHING |= {f"{_b}.attn.{_part}.weight": (64, 64), f"{_b}.attn.{_part}.bias": (64,)}
    EXPECTED_FLOW_MATCHING |= {
        f"{_b}.attn.q_norm.weight": (16,),
        f"{_b}.attn.q_norm.bias": (16,),
        f"{_b}.attn.k_norm.weight": (16,),
        f"{_b}.attn.k_norm.bias": (16,),
        f"{_b}.mlp.fc1.weight": (64, 128),
        f"{_b}.mlp.fc1.bias": (128,),
        f"{_b}.mlp.fc2.weight": (128, 64),
        f"{_b}.mlp.fc2.bias": (64,),
        f"{_b}.conv.block.1.weight": (3, 64, 64),
        f"{_b}.conv.block.1.bias": (64,),
        f"{_b}.conv.block.3.weight": (64,),
        f"{_b}.conv.block.3.bias": (64,),
        f"{_b}.conv.block.6.weight": (3, 64, 64),
        f"{_b}.conv.block.6.bias": (64,),
        f"{_b}.adaLN_modulation.1.weight": (64, 576),
        f"{_b}.adaLN_modulation.1.bias": (576,),
    }

EXPECTED_FLOW_EXTRA = {
    "input_embedding.weight": (64, 6561),
    "spk_embed_affine_layer.weight": (192, 80),
    "spk_embed_affine_layer.bias": (80,),
    "encoder_proj.weight": (64, 80),
    "encoder_proj.bias": (80,),
}

EXPECTED_HIFIGAN = {
    "conv_pre.weight": (7, 80, 32),
    "conv_pre.bias": (32,),
    "ups.0.weight": (16, 16, 32),
    "ups.0.bias": (16,),
    "ups.1.weight": (11, 8, 16),
    "ups.1.bias": (8,),
    "ups.2.weight": (7, 4, 8),
    "ups.2.bias": (4,),
    "source_downs.0.weight": (30, 18, 16),
    "source_downs.0.bias": (16,),
    "source_downs.1.weight": (6, 18, 8),
    "source_downs.1.bias": (8,),
    "source_downs.2.weight": (1, 18, 4),
    "source_downs.2.bias": (4,),
    "conv_post.weight": (7, 4, 18),
    "conv_post.bias": (18,),
    "f0_predictor.condnet.0.weight": (3, 80, 16),
    "f0_predictor.condnet.0.bias": (16,),
    "f0_predictor.classifier.weight": (16, 1),
    "f0_predictor.classifier.bias": (1,),
    "m_source.l_linear.weight": (9, 1),
    "m_source.l_linear.bias": (1,),
}
for _layer in (2, 4, 6, 8):
    EXPECTED_HIFIGAN |= {
        f"f0_predictor.condnet.{_layer}.weight": (3, 16, 16),
        f"f0_predictor.condnet.{_layer}.bias": (16,),
    }
_GROUPS = [(f"source_resblocks.{s}", c, k) for s, (c, k) in enumerate([(16, 7), (8, 7), (4, 11)])]
_GROUPS += [
    (f"resblocks.{3 * s + j}", c, k) for s, c in enumerate([16, 8, 4]) for j, k in enumerate([3, 7, 11])
]
for _group, _c, _k in _GROUPS:
    for _j in range(3):
        for _convs in ("convs1", "convs2"):
            EXPECTED_HIFIGAN |= {
                f"{_group}.{_convs}.{_j}.weight": (_k, _c, _c),
                f"{_group}.{_convs}.{_j}.bias": (_c,),
            }
        for _act in ("activations1", "activations2"):
            EXPECTED_HIFIGAN[f"{_group}.{_act}.{_j}.alpha"] = (_c,)

EXPECTED_PROMPT_CACHE = {
    "prompt_cache.spk_cb": (192,),
    "prompt_cache.conformer_cnn_cache": (64, 6, 1),
    "prompt_cache.conformer_att_cache": (32, T, 4, 4),
    "prompt_cache.estimator_cnn_cache": (128, 2, 2 * NT, 2),
    "prompt_cache.estimator_att_cache": (32, T, 4 * 2 * NT, 2),
}
EXPECTED_PROMPT_KEYS = {
    "mtmd.prompt_cache.version": (I32, 2),
    "mtmd.prompt_cache.n_timesteps": (I32, NT),
    "mtmd.prompt_cache.temperature": (KF32, 1.0),
    "mtmd.prompt_cache.pre_lookahead": (I32, 3),
    "mtmd.prompt_cache.chunk_main": (I32, 25),
    "mtmd.prompt_cache.chunk_total": (I32, 28),
    "mtmd.prompt_cache.up_rate": (I32, 2),
}
EXPECTED = {
    ENCODER: EXPECTED_ENCODER,
    FLOW_MATCHING: EXPECTED_FLOW_MATCHING,
    FLOW_EXTRA: EXPECTED_FLOW_EXTRA,
    HIFIGAN: EXPECTED_HIFIGAN,
    PROMPT_CACHE: EXPECTED_PROMPT_CACHE,
}


@pytest.fixture(scope="module")
def headers(tiny_model_dir: Path) -> dict[str, GgufHeader]:
    return {name: read_gguf_header(tiny_model_dir / name) for name in FILES}


# ---- layout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_tensor_names_ne_and_dtypes(headers: dict[str, GgufHeader], name: str) -> None:
    header = headers[name]
    assert {n: info.ne for n, info in header.tensors.items()} == EXPECTED[name]
    assert {info.ggml_type for info in header.tensors.values()} == {F32}
    assert all(info.offset % 32 == 0 for info in header.tensors.values())
    assert header.version == 3


def test_tensor_counts_match_the_spec(headers: dict[str, GgufHeader]) -> None:
    assert [len(headers[name].tensors) for name in FILES] == [92, 58, 5, 246, 5]


def test_weight_files_carry_only_the_demo_marker(headers: dict[str, GgufHeader]) -> None:
    for name in FILES[:4]:
        assert {key: (f.type, f.value) for key, f in headers[name].fields.items()} == {
            "omni_app.tiny_demo": (BOOL, True)
        }, name


def test_prompt_cache_keys_have_exact_types_and_values(headers: dict[str, GgufHeader]) -> None:
    found = {key: (f.type, f.value) for key, f in headers[PROMPT_CACHE].fields.items()}
    assert found == EXPECTED_PROMPT_KEYS | {"omni_app.tiny_demo": (BOOL, True)}


def test_full_size_tables_match_the_release_counts() -> None:
    """model-files.md §8.1: parameter counts x 4 bytes = the README sizes; §8.2-8.5 tensor counts."""
    full = FULL_TOKEN2WAV_DIMS
    tables = [
        encoder_shapes(full.encoder),
        flow_matching_shapes(full.dit),
        flow_extra_shapes(full.encoder),
        hifigan_shapes(full.hift),
    ]
    assert [len(table) for table in tables] == [206, 394, 5, 246]
    counts = [sum(int(np.prod(shape)) for shape, _ in table.values()) for table in tables]
    assert counts == [37_831_168, 114_555_472, 3_415_712, 20_806_557]
    assert tables[2]["input_embedding.weight"][0] == (6561, 512)
    assert tables[3]["ups.0.weight"][0] == (512, 256, 16)  # ConvTranspose1d (in, out, k) -> ne (16, 256, 512)


def test_full_size_prompt_cache_follows_the_size_formula() -> None:
    """model-files.md §8.6: bytes = T (40960 + NT 131072) + NT 262144, plus spk_cb and the conv cache."""
    cache = prompt_cache_shapes(FULL_TOKEN2WAV_DIMS)
    n_bytes = 4 * sum(int(np.prod(shape)) for shape, _ in cache.values())
    frames, steps = FULL_TOKEN2WAV_DIMS.prompt.n_frames, FULL_TOKEN2WAV_DIMS.prompt.n_timesteps
    assert n_bytes == frames * (40960 + steps * 131072) + steps * 262144 + 4 * 192 + 4 * 512 * 6
    assert cache["prompt_cache.estimator_att_cache"][0] == (2, 8 * 16 * steps, frames, 128)


# ---- values (token2wav.md §8.2 fixes) ---------------------------------------------------------------


def test_dit_adaln_and_final_layers_are_not_zero(headers: dict[str, GgufHeader]) -> None:
    header = headers[FLOW_MATCHING]
    names = [n for n in header.tensors if "adaLN_modulation" in n or "final_layer.linear" in n]
    assert len(names) == 8
    for name in names:
        values = _tensor(header, name)
        assert np.count_nonzero(values) == values.size, name
        assert abs(float(values.std()) - 0.05) < 0.01, name


def test_weights_are_small_normals_and_norms_near_one(headers: dict[str, GgufHeader]) -> None:
    matrices = np.concatenate(
        [_tensor(headers[ENCODER], n).ravel() for n in EXPECTED_ENCODER if "linear_" in n]
    )
    assert abs(float(matrices.mean())) < 0.002 and abs(float(matrices.std()) - 0.05) < 0.001
    suffixes = ("norm_mha.weight", "norm_ff.weight", "out.1.weight", "after_norm.weight")
    suffixes += ("q_norm.weight", "k_norm.weight", "conv.block.3.weight")
    norms = np.concatenate(
        [_tensor(h, n) for h in headers.values() for n in h.tensors if n.endswith(suffixes)]
    )
    assert norms.size == 64 * 11 + 16 * 4 + 64 * 2  # encoder LayerNorms, DiT q/k norms, DiT conv norms
    assert abs(float(norms.mean()) - 1.0) < 0.01 and 0.03 < float(norms.std()) < 0.07


def test_snake_alphas_are_positive_near_one(headers: dict[str, GgufHeader]) -> None:
    header = headers[HIFIGAN]
    alphas = np.concatenate([_tensor(header, n) for n in header.tensors if n.endswith(".alpha")])
    assert alphas.size == 2 * 3 * (3 * 16 + 3 * 8 + 3 * 4 + 16 + 8 + 4)
    assert 1.0 <= float(alphas.min()) < 1.01 and 1.09 < float(alphas.max()) < 1.1


def _conv1d_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """PyTorch Conv1d (out, in, k), stride 1, padding (k - 1) / 2, on x (in, T)."""
    k = weight.shape[2]
    padded = np.pad(x, ((0, 0), ((k - 1) // 2, (k - 1) // 2)))
    windows = np.stack([padded[:, i : i + x.shape[1]] for i in range(k)], axis=-1)  # (in, T, k)
    return np.einsum("oik,itk->ot", weight, windows) + bias[:, None]


def test_f0_predictor_gives_a_voiced_pitch_near_200_hz(headers: dict[str, GgufHeader]) -> None:
    """ConvRNNF0Predictor on a random log-mel: 5 x (conv k3 -> ELU), Linear, |.| (token2wav.md §3.7); its
    convolutions are scaled by 1/sqrt(fan-in) and the classifier weights are N(0, 5²)."""
    header = headers[HIFIGAN]
    assert _tensor(header, "f0_predictor.classifier.bias").tolist() == [200.0]
    assert abs(float(_tensor(header, "f0_predictor.condnet.2.weight").std()) * np.sqrt(48) - 1.0) < 0.1
    assert abs(float(_tensor(header, "f0_predictor.condnet.0.weight").std()) * np.sqrt(240) - 1.0) < 0.1
    hidden = np.random.default_rng(5).normal(-4.0, 2.0, size=(80, 40))  # log-magnitude mel, 40 frames
    for layer in (0, 2, 4, 6, 8):
        prefix = f"f0_predictor.condnet.{layer}"
        hidden = _conv1d_same(hidden, _tensor(header, f"{prefix}.weight"), _tensor(header, f"{prefix}.bias"))
        hidden = np.where(hidden > 0, hidden, np.expm1(hidden))
    classifier = _tensor(header, "f0_predictor.classifier.weight")  # numpy (1, 16)
    f0 = np.abs(classifier @ hidden + 200.0)[0]
    assert f0.shape == (40,) and 100.0 < float(f0.min()) <= float(f0.max()) < 300.0
    assert float(f0.std()) > 2.0  # the pitch follows the mel by Hz, not by hundredths of a Hz


def test_prompt_cache_packs_token_layers_twice_along_time(headers: dict[str, GgufHeader]) -> None:
    cache = _tensor(headers[PROMPT_CACHE], "prompt_cache.conformer_att_cache")  # (layers, heads, T, 2 hd)
    for layer in range(4):
        halves_equal = np.array_equal(cache[layer, :, : T // 2], cache[layer, :, T // 2 :])
        assert halves_equal == (layer < 2), layer  # layers 0-1 are token-rate: [c ; c]
    spk = _tensor(headers[PROMPT_CACHE], "prompt_cache.spk_cb")
    assert 0.5 < float(np.linalg.norm(spk)) / np.sqrt(192) < 1.5


# ---- determinism ------------------------------------------------------------------------------------


def test_same_seed_is_byte_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    paths = write_token2wav(tmp_path, seed=0)
    assert paths == [tmp_path / name for name in FILES]
    for name in FILES:
        assert _sha256(tmp_path / name) == _sha256(tiny_model_dir / name), name


def test_other_seed_changes_every_random_tensor(headers: dict[str, GgufHeader], tmp_path: Path) -> None:
    write_token2wav(tmp_path, seed=1)
    for name in FILES:
        other = read_gguf_header(tmp_path / name)
        assert [(n, i.ne) for n, i in other.tensors.items()] == [
            (n, i.ne) for n, i in headers[name].tensors.items()
        ]
        for tensor in other.tensors:
            same = np.array_equal(_tensor(other, tensor), _tensor(headers[name], tensor))
            assert same == (tensor == "f0_predictor.classifier.bias"), tensor


# ---- validation (omni_app.config) -------------------------------------------------------------------


def test_check_models_accepts_the_tiny_directory(tiny_model_dir: Path, capsys) -> None:
    report = validate_model_dir(tiny_model_dir)
    assert report.stages["token2wav"]
    assert [report.status_of(ATTRS[name]).status for name in FILES] == ["present"] * 5
    assert cli.main(["check-models", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    for name in FILES:
        assert f"[ok     ] {name}" in out
    assert "Stages available: llm, vision, audio, tts, token2wav\n" in out


# Other dims than the tiny ones (DiT heads x head_dim != hidden, more up blocks, NT 5): the checks read the
# widths from the files.
OTHER = Token2WavDims(
    encoder=EncoderDims(width=32, n_blocks=1, n_up_blocks=3, n_heads=2, n_units=48),
    dit=DitDims(hidden=48, depth=3, n_heads=2, head_dim=8, mlp_hidden=96, time_embd=32),
    hift=HiftDims(base_channels=16, f0_channels=8),
    prompt=PromptCacheDims(n_timesteps=5, n_frames=12),
)


def test_other_dims_are_accepted(tmp_path: Path) -> None:
    write_token2wav(tmp_path, seed=2, dims=OTHER)
    report = validate_model_dir(tmp_path)
    assert [report.status_of(ATTRS[name]).message for name in FILES] == [""] * 5
    assert report.stages["token2wav"]
    assert read_gguf_header(tmp_path / PROMPT_CACHE).tensors["prompt_cache.estimator_att_cache"].ne == (
        16,
        12,
        2 * 3 * 5,
        2,
    )


_TABLES = {
    ENCODER: ("encoder", lambda d: encoder_shapes(d.encoder)),
    FLOW_MATCHING: ("flow_matching", lambda d: flow_matching_shapes(d.dit)),
    FLOW_EXTRA: ("flow_extra", lambda d: flow_extra_shapes(d.encoder)),
    HIFIGAN: ("hifigan", lambda d: hifigan_shapes(d.hift)),
    PROMPT_CACHE: ("prompt_cache", prompt_cache_shapes),
}


def _rewrite(
    model_dir: Path,
    name: str,
    edit_tensors: Callable[[dict], None] = lambda tensors: None,
    edit_keys: Callable[[dict], None] = lambda keys: None,
    dims: Token2WavDims = TINY_TOKEN2WAV_DIMS,
) -> dict[str, str]:
    """Write the five tiny files, replace `name` by an edited copy made with `dims`; return every file's
    validation message (by file name)."""
    write_token2wav(model_dir)
    file_key, table = _TABLES[name]
    tensors = random_tensors(table(dims), seed=0, file_key=file_key)
    keys = {key: (value, value_type) for key, (value_type, value) in EXPECTED_PROMPT_KEYS.items()}
    if name == PROMPT_CACHE:
        keys["mtmd.prompt_cache.n_timesteps"] = (dims.prompt.n_timesteps, I32)
    else:
        keys = {}
    edit_tensors(tensors)
    edit_keys(keys)
    writer = gguf.GGUFWriter(model_dir / name, "unchecked")
    for key, (value, value_type) in keys.items():
        writer.add_key_value(key, value, value_type)
    write_tensors_and_close(writer, tensors)
    report = validate_model_dir(model_dir)
    messages = {file: report.status_of(ATTRS[file]).message for file in FILES}
    assert report.stages["token2wav"] == (set(messages.values()) == {""})
    return messages


def test_unedited_rewrite_is_valid(tmp_path: Path) -> None:
    assert set(_rewrite(tmp_path, HIFIGAN).values()) == {""}


def _resize(name: str, shape: tuple[int, ...]) -> Callable[[dict], None]:
    return lambda tensors: tensors.update({name: np.zeros(shape, dtype=np.float32)})


@pytest.mark.parametrize(
    ("name", "edit_tensors", "problem"),
    [
        (
            ENCODER,
            lambda t: t.pop("up_encoders.1.feed_forward.w_2.bias"),
            "required tensor 'up_encoders.1.feed_forward.w_2.bias' is missing",
        ),
        (ENCODER, lambda t: t.pop("after_norm.weight"), "required tensor 'after_norm.weight' is missing"),
        (
            ENCODER,
            _resize("encoders.1.self_attn.pos_bias_v", (4, 8)),
            "tensor 'encoders.1.self_attn.pos_bias_v' has ne (8, 4), expected (16, 4)",
        ),
        (
            ENCODER,
            _resize("encoders.0.self_attn.pos_bias_u", (3, 16)),
            "tensor 'encoders.0.self_attn.pos_bias_u' gives 3 heads, which do not divide the width 64",
        ),
        (
            FLOW_MATCHING,
            _resize("estimator.in_proj.weight", (64, 240)),
            "tensor 'estimator.in_proj.weight' has ne (240, 64), expected (320, 64)",
        ),
        (
            FLOW_MATCHING,
            _resize("estimator.blocks.1.adaLN_modulation.1.weight", (384, 64)),
            "tensor 'estimator.blocks.1.adaLN_modulation.1.weight' has ne (64, 384), expected (64, 576)",
        ),
        (
            FLOW_MATCHING,
            lambda t: t.pop("estimator.blocks.1.conv.block.6.bias"),
            "required tensor 'estimator.blocks.1.conv.block.6.bias' is missing",
        ),
        (
            FLOW_EXTRA,
            _resize("input_embedding.weight", (6562, 64)),
            "tensor 'input_embedding.weight' has ne (64, 6562), expected (64, 6561)",
        ),
        (
            FLOW_EXTRA,
            _resize("spk_embed_affine_layer.weight", (80, 256)),
            "tensor 'spk_embed_affine_layer.weight' has ne (256, 80), expected (192, 80)",
        ),
        (
            HIFIGAN,
            lambda t: t.update({"conv_post.weight": t["conv_post.weight"].astype(np.float16)}),
            "tensor 'conv_post.weight' is F16, expected F32 (the Token2Wav files are F32)",
        ),
        (
            HIFIGAN,
            _resize("ups.1.weight", (16, 8, 7)),
            "tensor 'ups.1.weight' has ne (7, 8, 16), expected (11, 8, 16)",
        ),
        (
            HIFIGAN,
            lambda t: t.pop("resblocks.7.activations2.1.alpha"),
            "required tensor 'resblocks.7.activations2.1.alpha' is missing",
        ),
        (
            PROMPT_CACHE,
            lambda t: t.pop("prompt_cache.estimator_cnn_cache"),
            "required tensor 'prompt_cache.estimator_cnn_cache' is missing",
        ),
        (
            PROMPT_CACHE,
            _resize("prompt_cache.estimator_att_cache", (2, 80, 6, 32)),
            "tensor 'prompt_cache.estimator_att_cache' has ne (32, 6, 80, 2), expected (32, 8, 80, 2)",
        ),
        (
            PROMPT_CACHE,
            _resize("prompt_cache.estimator_cnn_cache", (1, 20, 2, 128)),
            "tensor 'prompt_cache.estimator_cnn_cache' has ne (128, 2, 20, 1), expected (128, 2, 20, 2)",
        ),
        (
            PROMPT_CACHE,
            _resize("prompt_cache.spk_cb", (256,)),
            "tensor 'prompt_cache.spk_cb' has ne (256,), expected (192,)",
        ),
        (
            PROMPT_CACHE,
            _resize("prompt_cache.conformer_att_cache", (4, 0, 8, 32)),
            "tensor 'prompt_cache.conformer_att_cache' has ne (32, 8, 0, 4), an empty dimension",
        ),
    ],
)
def test_broken_tensors_are_named(tmp_path: Path, name: str, edit_tensors: Callable, problem: str) -> None:
    messages = _rewrite(tmp_path, name, edit_tensors=edit_tensors)
    assert messages == {file: f"{name}: {problem}" if file == name else "" for file in FILES}


def test_speaker_vector_may_carry_a_batch_axis(tmp_path: Path) -> None:
    messages = _rewrite(tmp_path, PROMPT_CACHE, _resize("prompt_cache.spk_cb", (1, 192)))
    assert set(messages.values()) == {""}


@pytest.mark.parametrize(
    ("edit_keys", "problem"),
    [
        (
            lambda k: k.pop("mtmd.prompt_cache.n_timesteps"),
            "required key 'mtmd.prompt_cache.n_timesteps' is missing",
        ),
        (
            lambda k: k.update({"mtmd.prompt_cache.n_timesteps": (10, GGUFValueType.UINT32)}),
            "key 'mtmd.prompt_cache.n_timesteps' has type UINT32, expected INT32",
        ),
        (
            lambda k: k.update({"mtmd.prompt_cache.temperature": (1.0, GGUFValueType.FLOAT64)}),
            "key 'mtmd.prompt_cache.temperature' has type FLOAT64, expected FLOAT32",
        ),
        (
            lambda k: k.update({"mtmd.prompt_cache.n_timesteps": (0, I32)}),
            "key 'mtmd.prompt_cache.n_timesteps' is 0, expected a positive step count",
        ),
        (
            lambda k: k.update({"mtmd.prompt_cache.n_timesteps": (3, I32)}),
            "tensor 'prompt_cache.estimator_cnn_cache' has ne (128, 2, 20, 2), expected (128, 2, 18, 2)",
        ),
    ],
)
def test_prompt_cache_key_problems_are_named(tmp_path: Path, edit_keys: Callable, problem: str) -> None:
    messages = _rewrite(tmp_path, PROMPT_CACHE, edit_keys=edit_keys)
    assert messages == {file: f"{PROMPT_CACHE}: {problem}" if file == PROMPT_CACHE else "" for file in FILES}


@pytest.mark.parametrize(
    ("name", "dims", "problem"),
    [
        (
            FLOW_EXTRA,
            Token2WavDims(encoder=EncoderDims(width=32)),
            "tensor 'input_embedding.weight' has width 32, but the encoder takes 64 inputs (encoder.gguf)",
        ),
        (
            PROMPT_CACHE,
            Token2WavDims(encoder=EncoderDims(n_heads=8)),
            "tensor 'prompt_cache.conformer_att_cache' has ne (16, 8, 8, 4), but encoder.gguf implies "
            "(32, 8, 4, 4)",
        ),
        (
            PROMPT_CACHE,
            Token2WavDims(dit=DitDims(depth=4), prompt=PromptCacheDims(n_timesteps=5)),
            "tensor 'prompt_cache.estimator_cnn_cache' has ne (128, 2, 20, 2), but flow_matching.gguf "
            "implies (128, 2, 10, 2)",
        ),
        (
            PROMPT_CACHE,
            Token2WavDims(dit=DitDims(head_dim=8, n_heads=8)),
            "tensor 'prompt_cache.estimator_att_cache' has ne (16, 8, 160, 2), but flow_matching.gguf "
            "implies (32, 8, 80, 2)",
        ),
    ],
)
def test_cross_file_width_problems_name_the_other_file(
    tmp_path: Path, name: str, dims: Token2WavDims, problem: str
) -> None:
    messages = _rewrite(tmp_path, name, dims=dims)
    assert messages == {file: f"{name}: {problem}" if file == name else "" for file in FILES}

"""The engine's LLM stage (`omni_engine.Llm`, libllama on CPU) against transformers `Qwen3ForCausalLM`
in float32, both holding the weights of the tiny GGUF, and the engine tokenizer against an HF byte-level BPE
tokenizer built from the same vocabulary and merges.

Error measure: per position, rel = ||engine - reference||_2 / ||reference||_2; the tests bound the maximum
over positions (messages also give the mean and max|diff| / max|reference|).

Two configurations are checked:
- exact (F32 weight file, `kv_type="f32"`, `flash_attn="off"`): the graph itself; held to the issue's 1e-3
  (measured 7e-7 for logits and hidden states).
- production (F16 weight file, the engine's defaults: F16 K/V cache and, on CPU, flash attention, which rounds
  Q/K/V to F16 and accumulates in F16): measured max 1.1e-3 / mean 7.8e-4, growing with the position from
  ~2.7e-4 at position 0; held to 3e-3. Greedy tokens must be identical in both.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hf_reference import (
    reference_forward,
    reference_greedy,
    reference_model,
    reference_remove_then_step,
    reference_tokenize,
)

import omni_engine

N_GPU_LAYERS = int(os.environ.get("OMNI_TEST_N_GPU_LAYERS", "0"))  # -1 on the GPU machine (README, CUDA)
EXACT_TOLERANCE = 1e-3  # exact configuration; measured 7e-7 (see the module docstring)
PRODUCTION_TOLERANCE = 3e-3  # F16 K/V cache + flash attention; measured 1.1e-3
# Same K/V, only the batch shapes differ: measured 1.8e-7 on CPU, 4.0e-4 on CUDA (other kernels per shape).
TRUNCATE_TOLERANCE = 1e-5 if N_GPU_LAYERS == 0 else EXACT_TOLERANCE
N_GREEDY = 32
# One thread: the tiny model gains nothing from more, and ggml's spinning thread barriers make multi-threaded
# decoding erratic (seconds instead of ~0.3 s for 32 steps) when the 2 CI cores are shared with torch.
ENGINE_THREADS = 1

# ~40 ids mixing chat-control tokens, byte symbols ("\n" 198, " " 220), merges, fillers and <unk>.
PARITY_IDS = [
    151644, 5, 198, 151697, 128244, 128244, 151699, 300, 301, 512,
    220, 700, 151645, 198, 151644, 900, 198, 151667, 198, 198,
    151668, 198, 198, 151703, 1000, 5000, 20000, 60000, 100000, 140000,
    151642, 33, 71, 72, 151704, 151645, 198, 151683, 151684, 151705,
]  # fmt: skip

TOKENIZER_CASES = [
    "Hello world! How can I help you today?",
    "The answer is 42, not 3.14159 or 1024; call 555-0100.",
    "你好！今天天气怎么样？",
    "2026年2月11日，下午三点半。",
    "<|im_start|>system\n模仿音频样本的音色并生成新的内容。\n<|audio_start|>",
    "<|audio_end|>你的任务是用这种声音模式来当一个助手。请认真、高质量地回复用户的问题。"
    "请用高自然度的方式和用户聊天。你是由面壁智能开发的人工智能助手：面壁小钢炮。<|im_end|>\n<|im_start|>user\n",
    "<|im_start|>system\nClone the voice in the provided audio prompt.\n<|audio_start|><|audio_end|>Please "
    "assist users while maintaining this voice style. You are a helpful assistant developed by ModelBest: "
    "MiniCPM-Omni.<|im_end|>\n<|im_start|>user\n",
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>",
    "a<think>b</think>c<unk>d<|listen|><|speak|><unit></unit>",
    "line one\nline two\n\n\tindented\r\n  spaced   out  \n",
    "I ❤️ llamas 🦙🦙 and 😀!",
    "don't I'LL we've THEY'RE it's",
    "MiniCPM-o 4.5 模型：面壁小钢炮 v2.0 (beta)",
    "   ",
    "",
]


def _relative_errors(engine: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.linalg.norm(engine - reference, axis=-1) / np.linalg.norm(reference, axis=-1)


def _error_report(name: str, engine: np.ndarray, reference: np.ndarray) -> tuple[float, str]:
    rel = _relative_errors(engine, reference)
    max_abs_ratio = float(np.abs(engine - reference).max() / np.abs(reference).max())
    worst = int(rel.argmax())
    return float(rel.max()), (
        f"{name}: max rel {rel.max():.3e} at position {worst}, mean rel {rel.mean():.3e}, "
        f"max|diff|/max|ref| {max_abs_ratio:.3e}"
    )


def _engine_greedy(llm: omni_engine.Llm, prompt: list[int], n_new: int) -> list[int]:
    llm.clear()
    logits = llm.eval_tokens(prompt)
    generated: list[int] = []
    for _ in range(n_new):
        token = int(np.argmax(logits))
        generated.append(token)
        logits, _hidden = llm.step(token)
    return generated


@pytest.fixture(scope="module")
def llm_f32(tiny_llm_f32_path: Path) -> omni_engine.Llm:
    return omni_engine.Llm(
        str(tiny_llm_f32_path),
        n_ctx=512,
        n_threads=ENGINE_THREADS,
        n_gpu_layers=N_GPU_LAYERS,
        kv_type="f32",
        flash_attn="off",
    )


@pytest.fixture(scope="module")
def llm_f16(tiny_llm_path: Path) -> omni_engine.Llm:
    return omni_engine.Llm(str(tiny_llm_path), n_ctx=512, n_threads=ENGINE_THREADS, n_gpu_layers=N_GPU_LAYERS)


@pytest.fixture(scope="module")
def hf_f32(tiny_llm_f32_path: Path):
    return reference_model(tiny_llm_f32_path)


@pytest.fixture(scope="module")
def hf_f16(tiny_llm_path: Path):
    return reference_model(tiny_llm_path)


def test_dimensions(llm_f16: omni_engine.Llm) -> None:
    assert (llm_f16.n_vocab, llm_f16.n_embd) == (151748, 128)


@pytest.mark.parametrize("text", TOKENIZER_CASES)
def test_tokenizer_matches_reference(llm_f16: omni_engine.Llm, text: str) -> None:
    assert llm_f16.tokenize(text) == reference_tokenize(text)


def test_special_tokens_are_not_parsed_when_disabled(llm_f16: omni_engine.Llm) -> None:
    ids = llm_f16.tokenize("<|im_end|>", parse_special=False)
    assert 151645 not in ids
    assert b"".join(llm_f16.token_to_piece(token) for token in ids) == b"<|im_end|>"


def test_pieces_reassemble_plain_text(llm_f16: omni_engine.Llm) -> None:
    for text in ("Hello world!", "你好！今天天气怎么样？", "I ❤️ llamas 🦙\n\n"):
        pieces = b"".join(llm_f16.token_to_piece(token) for token in llm_f16.tokenize(text))
        assert pieces == text.encode("utf-8")


def _check_forward(llm: omni_engine.Llm, hf, tolerance: float) -> None:
    llm.clear()
    logits, hidden = llm.eval_all(PARITY_IDS)
    ref_logits, ref_hidden = reference_forward(hf, PARITY_IDS)
    assert logits.shape == ref_logits.shape == (len(PARITY_IDS), 151748)
    assert hidden.shape == ref_hidden.shape == (len(PARITY_IDS), 128)
    logit_error, logit_message = _error_report("logits", logits, ref_logits)
    hidden_error, hidden_message = _error_report("hidden", hidden, ref_hidden)
    assert logit_error < tolerance and hidden_error < tolerance, f"{logit_message}; {hidden_message}"


def test_forward_matches_reference_f32(llm_f32: omni_engine.Llm, hf_f32) -> None:
    _check_forward(llm_f32, hf_f32, EXACT_TOLERANCE)


def test_forward_matches_reference_f16(llm_f16: omni_engine.Llm, hf_f16) -> None:
    _check_forward(llm_f16, hf_f16, PRODUCTION_TOLERANCE)


def test_greedy_matches_reference_f32(llm_f32: omni_engine.Llm, hf_f32) -> None:
    prompt = PARITY_IDS[:24]
    assert _engine_greedy(llm_f32, prompt, N_GREEDY) == reference_greedy(hf_f32, prompt, N_GREEDY)


def test_greedy_matches_reference_f16(llm_f16: omni_engine.Llm, hf_f16) -> None:
    prompt = PARITY_IDS[:24]
    assert _engine_greedy(llm_f16, prompt, N_GREEDY) == reference_greedy(hf_f16, prompt, N_GREEDY)


def test_step_hidden_matches_eval_all(llm_f32: omni_engine.Llm) -> None:
    llm_f32.clear()
    all_logits, all_hidden = llm_f32.eval_all(PARITY_IDS)
    llm_f32.clear()
    llm_f32.eval_tokens(PARITY_IDS[:-1])
    step_logits, step_hidden = llm_f32.step(PARITY_IDS[-1])
    assert llm_f32.n_past == len(PARITY_IDS)
    error, message = _error_report("step vs eval_all", step_logits[None], all_logits[-1:])
    assert error < EXACT_TOLERANCE, message
    error, message = _error_report("step hidden vs eval_all", step_hidden[None], all_hidden[-1:])
    assert error < EXACT_TOLERANCE, message


def test_kv_remove_in_the_middle_matches_shifted_reference(llm_f32: omni_engine.Llm, hf_f32) -> None:
    p0, p1, probe = 10, 25, 151644
    llm_f32.clear()
    llm_f32.eval_tokens(PARITY_IDS)
    llm_f32.remove(p0, p1)
    assert llm_f32.n_past == len(PARITY_IDS) - (p1 - p0)
    shifted, _hidden = llm_f32.step(probe)
    reference = reference_remove_then_step(hf_f32, PARITY_IDS, p0, p1, probe)
    error, message = _error_report("logits after remove(10, 25)", shifted[None], reference[None])
    # Without the RoPE re-rotation the reference moves by ~0.21, far outside this bound.
    assert error < EXACT_TOLERANCE, message


def test_kv_remove_at_the_end_matches_fresh_context(llm_f32: omni_engine.Llm) -> None:
    kept, probe = PARITY_IDS[:20], 151644
    llm_f32.clear()
    llm_f32.eval_tokens(PARITY_IDS)
    llm_f32.remove(len(kept), len(PARITY_IDS))
    assert llm_f32.n_past == len(kept)
    truncated, _hidden = llm_f32.step(probe)
    llm_f32.clear()
    fresh = llm_f32.eval_tokens(kept + [probe])
    error, message = _error_report("logits after remove(20, 40)", truncated[None], fresh[None])
    assert error < TRUNCATE_TOLERANCE, message

"""Benchmark of the pipeline: LLM text path, speaking turns to first audio, and the stages alone.

    python -m omni_app bench --model-dir DIR [--n-ctx 4096] [--n-gpu-layers -1] [--threads 0]
        [--prompt-tokens 512] [--gen-tokens 128] [--runs 3] [--json-out PATH]
        [--make-full-size-models DIR [--quant Q4_K_M|Q8_0] [--n-layer 36]]

One model in memory at a time:
- the Llm stage alone: prefill of exactly prompt-tokens tokens, then exactly gen-tokens greedy decode steps
  (end-of-sequence ignored), so decode figures are comparable across models and runs;
- the Engine (what the server uses): load time, then per run one user turn of ~prompt-tokens of text,
  greedy, up to gen-tokens: wall time from `prefill_text` to the first text event, and the engine's stats;
  with the TTS files also speaking turns of exactly gen-tokens answer tokens (end of answer ignored) and,
  with the Token2Wav files, their time to first audio and real-time factor;
- the vision encoder (a camera frame as the overview alone, a 2:1 image in 2 slices), the audio encoder, the
  TTS and Token2Wav stages alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from omni_app import config
from omni_app.tiny_models.vision import VISION_FILE

FILLER_TEXT = (
    "The quick brown fox jumps over the lazy dog while a small robot counts the stars above the quiet city. "
)
EVENT_TIMEOUT_S = 600.0
WARMUP_DECODE_STEPS = 8


@dataclass
class Metric:
    name: str
    unit: str
    description: str
    values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        if not self.values:
            return {"unit": self.unit, "description": self.description, "runs": []}
        return {
            "unit": self.unit,
            "description": self.description,
            "median": statistics.median(self.values),
            "mean": statistics.fmean(self.values),
            "min": min(self.values),
            "max": max(self.values),
            "runs": self.values,
        }


class Metrics:
    def __init__(self) -> None:
        self.items: dict[str, Metric] = {}

    def add(self, name: str, unit: str, description: str, value: float | None) -> None:
        metric = self.items.setdefault(name, Metric(name, unit, description))
        if value is not None:
            metric.values.append(float(value))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: metric.summary() for name, metric in self.items.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m omni_app bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, help="model directory (official layout); default: $OMNI_MODEL_DIR, ./models"
    )
    parser.add_argument("--llm-file", default="", help="explicit LLM gguf (default: the engine's choice)")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-gpu-layers", type=int, default=-1, help="-1: all layers on the GPU, 0: CPU only")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0: automatic")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json-out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--make-full-size-models",
        "--make-full-size-llm",
        type=Path,
        metavar="DIR",
        help="write full-size random-weight files (LLM, audio encoder) into DIR, then benchmark DIR",
    )
    parser.add_argument(
        "--quant", choices=("Q4_K_M", "Q8_0"), default="Q4_K_M", help="for --make-full-size-models"
    )
    parser.add_argument("--n-layer", type=int, default=36, help="for --make-full-size-llm (36 = real size)")
    return parser


def check_args(args: argparse.Namespace) -> str | None:
    if args.make_full_size_models is not None and args.model_dir is not None:
        return "--make-full-size-models DIR benchmarks DIR: leave out --model-dir"
    if args.make_full_size_models is None:
        args.model_dir = config.resolve_model_dir(None if args.model_dir is None else str(args.model_dir))
        if args.model_dir is None:
            return "no model directory: give --model-dir, set OMNI_MODEL_DIR, or use --make-full-size-models"
    if args.runs < 1 or args.prompt_tokens < 1 or args.gen_tokens < 1:
        return "--runs, --prompt-tokens and --gen-tokens must be at least 1"
    if args.prompt_tokens + args.gen_tokens + WARMUP_DECODE_STEPS > args.n_ctx:
        return f"--prompt-tokens + --gen-tokens + {WARMUP_DECODE_STEPS} must fit in --n-ctx {args.n_ctx}"
    return None


def greedy_sampling() -> Any:
    import omni_engine as oe

    return oe.SamplingParams(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0)


def synthetic_prompt(llm: Any, n_tokens: int) -> list[int]:
    """Exactly n_tokens ids of plain English text (no special tokens)."""
    one = len(llm.tokenize(FILLER_TEXT, parse_special=False))
    tokens = llm.tokenize(FILLER_TEXT * (n_tokens // max(one, 1) + 2), parse_special=False)
    return tokens[:n_tokens]


def detokenize(llm: Any, tokens: list[int]) -> str:
    return b"".join(llm.token_to_piece(t) for t in tokens).decode("utf-8", errors="ignore")


def run_engine_turn(engine: Any, events: queue.Queue, text: str, gen_tokens: int) -> dict[str, Any]:
    """One user turn from a clean conversation; returns wall timings, the arrival time and length of each
    audio event, and the engine's stats event."""
    engine.reset()
    start = time.perf_counter()
    prompt_tokens = engine.prefill_text(text)
    prefill_done = generate_at = time.perf_counter()
    engine.generate(gen_tokens)
    first_text: float | None = None
    audio: list[tuple[float, int]] = []
    stats: dict[str, Any] = {}
    while True:
        stamp, event = events.get(timeout=EVENT_TIMEOUT_S)
        if event["type"] == "text" and first_text is None:
            first_text = stamp
        elif event["type"] == "audio":
            audio.append((stamp, len(event["pcm"])))
        elif event["type"] == "stats":
            stats = event
        elif event["type"] == "error":
            raise RuntimeError(f"engine error during the bench turn: {event['message']}")
        elif event["type"] == "end_of_turn":
            break
    return {
        "prompt_tokens": prompt_tokens,
        "prefill_text_ms": (prefill_done - start) * 1e3,
        "first_text_ms": None if first_text is None else (first_text - start) * 1e3,
        "generate_at": generate_at,
        "audio": audio,
        "stats": stats,
    }


def bench_engine(args: argparse.Namespace, model_dir: Path, text: str, metrics: Metrics) -> dict[str, Any]:
    """Loads the Engine, runs the turns, closes it; returns the engine's info."""
    import omni_engine as oe

    options = oe.EngineOptions(
        model_dir=str(model_dir),
        llm_file=args.llm_file,
        n_ctx=args.n_ctx,
        n_gpu_layers=args.n_gpu_layers,
        n_threads=args.threads,
    )
    start = time.perf_counter()
    engine = oe.Engine(options)
    metrics.add(
        "engine_load_s", "s", "Engine() construction: all stage models loaded", time.perf_counter() - start
    )
    info = dict(engine.info)
    events: queue.Queue = queue.Queue()
    session = oe.SessionOptions(media_type="audio", language="en", speak=False, sampling=greedy_sampling())
    session.max_new_tokens = args.gen_tokens
    engine.start_session(session, lambda event: events.put((time.perf_counter(), event)))
    run_engine_turn(engine, events, text, WARMUP_DECODE_STEPS)
    for _ in range(args.runs):
        record_turn(run_engine_turn(engine, events, text, args.gen_tokens), metrics)
    if info["stages"].get("tts"):
        bench_speaking_turns(args, engine, events, text, metrics)
    engine.close()
    return info


# Speech codes per 10-token text chunk in the speaking turns: about what real speech needs (2 s of audio).
ENGINE_CODES_PER_CHUNK = 50
PCM_RATE = 24000  # Token2Wav output, samples per second


def speech_turn_figures(generate_at: float, audio: list[tuple[float, int]]) -> dict[str, float] | None:
    """A speaking turn's audio as the caller sees it, from the generate() call (perf_counter seconds) and
    the turn's audio events as (arrival time, samples): time to the first audio event, seconds of audio,
    and RTF = (last audio event - generate()) / seconds of audio. None for a turn without audio."""
    samples = sum(n for _, n in audio)
    if samples == 0:
        return None
    seconds = samples / PCM_RATE
    return {
        "first_audio_ms": (audio[0][0] - generate_at) * 1e3,
        "audio_s": seconds,
        "rtf": (audio[-1][0] - generate_at) / seconds,
    }


def bench_speaking_turns(
    args: argparse.Namespace, engine: Any, events: queue.Queue, text: str, metrics: Metrics
) -> None:
    """Speaking turns (speak=True) of exactly gen-tokens answer tokens (the end of the answer is ignored):
    the engine's time to the first 25 speech codes and, with the Token2Wav stage, to the first audio."""
    import omni_engine as oe

    session = oe.SessionOptions(
        media_type="audio",
        language="en",
        speak=True,
        sampling=greedy_sampling(),
        tts_sampling=oe.TtsSamplingParams(seed=0, max_tokens_per_chunk=ENGINE_CODES_PER_CHUNK),
    )
    session.max_new_tokens = args.gen_tokens
    session.ignore_eos = True
    engine.start_session(session, lambda event: events.put((time.perf_counter(), event)))
    run_engine_turn(engine, events, text, WARMUP_DECODE_STEPS)
    for _ in range(args.runs):
        turn = run_engine_turn(engine, events, text, args.gen_tokens)
        stats = turn["stats"]
        first = stats.get("first_speech_group_ms", -1)
        label = "engine stats, speaking turn: generate() -> first 25 speech codes (10 LLM tokens + TTS)"
        metrics.add("engine_first_speech_group_ms", "ms", label, first if first > 0 else None)
        metrics.add(
            "engine_speech_tokens",
            "codes",
            "engine stats: speech codes of the speaking turn",
            stats.get("speech_tokens"),
        )
        if engine.info["stages"].get("token2wav"):
            record_speaking_audio(turn, metrics)


def record_speaking_audio(turn: dict[str, Any], metrics: Metrics) -> None:
    figures = speech_turn_figures(turn["generate_at"], turn["audio"]) or {}
    stats = turn["stats"]
    metrics.add(
        "engine_first_audio_ms",
        "ms",
        "wall, speaking turn: generate() -> first audio event in Python",
        figures.get("first_audio_ms"),
    )
    metrics.add("engine_audio_s", "s", "speaking turn: seconds of audio (24 kHz)", figures.get("audio_s"))
    metrics.add(
        "engine_audio_rtf",
        "x",
        "speaking turn: (last audio event - generate()) / seconds of audio",
        figures.get("rtf"),
    )
    metrics.add(
        "engine_token2wav_ms",
        "ms",
        "engine stats: Token2Wav compute time of the speaking turn",
        stats.get("token2wav_ms"),
    )
    first = stats.get("first_audio_ms", -1)
    label = "engine stats: generate() -> first audio event (in the engine)"
    metrics.add("engine_stats_first_audio_ms", "ms", label, first if first >= 0 else None)


def record_turn(turn: dict[str, Any], metrics: Metrics) -> None:
    stats = turn["stats"]
    metrics.add(
        "turn_prompt_tokens",
        "tokens",
        "tokens that prefill_text reported for the turn's text",
        turn["prompt_tokens"],
    )
    metrics.add(
        "turn_prefill_text_ms",
        "ms",
        "wall: the prefill_text() call (tokenize + LLM prefill)",
        turn["prefill_text_ms"],
    )
    metrics.add(
        "turn_first_text_ms",
        "ms",
        "wall: prefill_text() call -> first text event in Python",
        turn["first_text_ms"],
    )
    metrics.add("engine_ttft_ms", "ms", "engine stats: time to first token", stats.get("ttft_ms"))
    metrics.add(
        "engine_decode_tokens",
        "tokens",
        "engine stats: tokens decoded in the turn",
        stats.get("decode_tokens"),
    )
    metrics.add(
        "engine_decode_tok_s", "tok/s", "engine stats: decode tokens per second", stats.get("tokens_per_s")
    )


def bench_llm(args: argparse.Namespace, llm_path: str, metrics: Metrics) -> str:
    """Prefill/decode of the Llm stage alone; returns the prompt text used (for the engine turns)."""
    import omni_engine as oe

    start = time.perf_counter()
    llm = oe.Llm(llm_path, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, n_threads=args.threads)
    metrics.add("llm_load_s", "s", "Llm() construction: the LLM file alone", time.perf_counter() - start)
    prompt = synthetic_prompt(llm, args.prompt_tokens)
    prefill_and_decode(llm, prompt, WARMUP_DECODE_STEPS)
    for _ in range(args.runs):
        prefill_s, decode_s = prefill_and_decode(llm, prompt, args.gen_tokens)
        metrics.add(
            "prefill_tok_s", "tok/s", f"Llm: prefill of {len(prompt)} tokens", len(prompt) / prefill_s
        )
        metrics.add("prefill_ms", "ms", f"Llm: prefill of {len(prompt)} tokens", prefill_s * 1e3)
        metrics.add(
            "decode_tok_s", "tok/s", f"Llm: {args.gen_tokens} greedy steps", args.gen_tokens / decode_s
        )
        metrics.add("decode_ms_per_token", "ms", "Llm: one greedy step", decode_s * 1e3 / args.gen_tokens)
    text = detokenize(llm, prompt)
    del llm
    return text


AUDIO_BENCH_SECONDS = 10.0


def bench_audio(args: argparse.Namespace, model_dir: Path, metrics: Metrics) -> None:
    """The audio stage alone on 10 s of a synthetic signal: mel frontend and encoder+projector+pool."""
    import numpy as np

    import omni_engine as oe

    path = model_dir / "audio" / "MiniCPM-o-4_5-audio-F16.gguf"
    if not path.is_file():
        return
    start = time.perf_counter()
    encoder = oe.AudioEncoder(str(path), use_gpu=args.n_gpu_layers != 0, n_threads=args.threads)
    metrics.add("audio_load_s", "s", "AudioEncoder() construction", time.perf_counter() - start)
    t = np.arange(int(AUDIO_BENCH_SECONDS * 16000)) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    encoder.encode(pcm)  # warm-up
    for _ in range(args.runs):
        start = time.perf_counter()
        mel = encoder.mel(pcm)
        mel_s = time.perf_counter() - start
        start = time.perf_counter()
        encoder.encode_mel(mel)
        encode_s = time.perf_counter() - start
        per_second = 1e3 / AUDIO_BENCH_SECONDS
        metrics.add("audio_mel_ms_per_s", "ms", "mel frontend, per second of audio", mel_s * per_second)
        label = "encoder+projector+pool, per second of audio"
        metrics.add("audio_encoder_ms_per_s", "ms", label, encode_s * per_second)


# The bench images are given for the real file's slice resolution and scaled to the file's (tiny: 56).
VISION_REFERENCE_RESOLUTION = 448
CAMERA_FRAME_SIZE = (640, 480)  # encoded as the overview alone (max_slices 0)
TWO_SLICE_IMAGE_SIZE = (1344, 672)  # 2:1; with max_slices 2 the plan cuts a 2x1 grid of slices
TWO_SLICES = 2
SlicePlanner = Callable[[int, int, int], dict[str, Any]]  # (width, height, max_slices) -> plan_image_slices


@dataclass(frozen=True)
class VisionCase:
    """One timed image: metric names vision_{name}_ms and vision_{name}_preprocess_ms."""

    name: str
    width: int
    height: int
    max_slices: int


def scaled_image_size(size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(width, height) given for a 448 file, scaled to a file whose slice resolution is image_size."""
    scale = image_size / VISION_REFERENCE_RESOLUTION
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def plan_slice_count(plan: dict[str, Any]) -> int:
    grid = plan["grid"]
    return 0 if grid is None else grid[0] * grid[1]


def vision_cases(image_size: int, plan: SlicePlanner) -> list[VisionCase]:
    """The camera frame (overview only) and the 2:1 image of 2 slices, sized for the file; RuntimeError if
    the file's slice plan does not give them max_slices slices."""
    cases = [
        VisionCase("overview", *scaled_image_size(CAMERA_FRAME_SIZE, image_size), 0),
        VisionCase(f"{TWO_SLICES}slices", *scaled_image_size(TWO_SLICE_IMAGE_SIZE, image_size), TWO_SLICES),
    ]
    for case in cases:
        n_slices = plan_slice_count(plan(case.width, case.height, case.max_slices))
        if n_slices != case.max_slices:
            raise RuntimeError(
                f"bench image {case.width}x{case.height} gets {n_slices} slices at image_size {image_size}, "
                f"not {case.max_slices}"
            )
    return cases


def synthetic_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic noise image, uint8 (height, width, 3): the encoder's speed does not depend on it."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@dataclass
class VisionImageRun:
    chunk_shapes: list[tuple[int, ...]]  # (3, h, w) of each chunk: the overview, then the slices row-major
    preprocess_ms: float  # preprocess_image alone
    chunk_ms: list[float]  # encode_chunk of each preprocessed chunk: the overview, then the slices
    image_ms: float  # encode_image: preprocessing and every chunk, as the pipeline runs an image


def run_vision_image(
    encoder: Any, preprocess: Callable[[np.ndarray, int], list[np.ndarray]], rgb: np.ndarray, max_slices: int
) -> VisionImageRun:
    start = time.perf_counter()
    chunks = preprocess(rgb, max_slices)
    preprocess_ms = (time.perf_counter() - start) * 1e3
    chunk_ms = []
    for chunk in chunks:
        start = time.perf_counter()
        encoder.encode_chunk(chunk)
        chunk_ms.append((time.perf_counter() - start) * 1e3)
    start = time.perf_counter()
    rows = encoder.encode_image(rgb, max_slices)
    image_ms = (time.perf_counter() - start) * 1e3
    if len(rows) != len(chunks):
        raise RuntimeError(f"encode_image gave {len(rows)} chunks, preprocess_image {len(chunks)}")
    return VisionImageRun([chunk.shape for chunk in chunks], preprocess_ms, chunk_ms, image_ms)


def record_vision_run(case: VisionCase, run: VisionImageRun, metrics: Metrics) -> None:
    image = f"{case.width}x{case.height} image, max_slices {case.max_slices} ({len(run.chunk_ms)} chunks)"
    metrics.add(f"vision_{case.name}_ms", "ms", f"encode_image of a {image}", run.image_ms)
    metrics.add(
        f"vision_{case.name}_preprocess_ms", "ms", f"preprocess_image of the {image}", run.preprocess_ms
    )
    label = "encode_chunk of one chunk (ViT + resampler; each chunk is about image_size^2 pixels)"
    for chunk_ms in run.chunk_ms:
        metrics.add("vision_chunk_ms", "ms", label, chunk_ms)


def vision_info(
    encoder: Any, path: Path, cases: list[VisionCase], runs: list[VisionImageRun]
) -> dict[str, Any]:
    return {
        "path": str(path),
        "size_gb": path.stat().st_size / 1e9,
        "backend": encoder.backend,
        "n_layers": encoder.n_layers,
        "n_layers_in_file": encoder.n_layers_in_file,
        "image_size": encoder.image_size,
        "patch_size": encoder.patch_size,
        "images": [
            {
                "name": c.name,
                "size": [c.width, c.height],
                "max_slices": c.max_slices,
                "chunks": run.chunk_shapes,
            }
            for c, run in zip(cases, runs, strict=True)
        ],
    }


def bench_vision(args: argparse.Namespace, model_dir: Path, metrics: Metrics) -> dict[str, Any] | None:
    """The vision stage alone: a camera frame as the overview alone and a 2:1 image in 2 slices, each timed
    whole (encode_image), its preprocessing alone and every chunk's encoder pass. Returns the encoder's
    settings and the images (None without the vision file)."""
    import omni_engine as oe

    path = model_dir / VISION_FILE
    if not path.is_file():
        return None
    start = time.perf_counter()
    encoder = oe.VisionEncoder(str(path), use_gpu=args.n_gpu_layers != 0, n_threads=args.threads)
    metrics.add("vision_load_ms", "ms", "VisionEncoder() construction", (time.perf_counter() - start) * 1e3)
    size, patch = encoder.image_size, encoder.patch_size
    cases = vision_cases(size, lambda w, h, m: oe.plan_image_slices(w, h, m, size, patch))
    images = [synthetic_rgb(case.width, case.height) for case in cases]

    def preprocess(rgb: np.ndarray, max_slices: int) -> list[np.ndarray]:
        return oe.preprocess_image(rgb, max_slices, size, patch)

    pairs = list(zip(cases, images, strict=True))
    warm_ups = [run_vision_image(encoder, preprocess, rgb, case.max_slices) for case, rgb in pairs]
    for _ in range(args.runs):
        for case, rgb in pairs:
            record_vision_run(case, run_vision_image(encoder, preprocess, rgb, case.max_slices), metrics)
    return vision_info(encoder, path, cases, warm_ups)


TTS_BENCH_CODES = 100


def bench_tts(args: argparse.Namespace, model_dir: Path, metrics: Metrics) -> None:
    """The TTS stage alone: one 10-token text chunk (random LLM hidden states), then speech codes drawn
    with the reference sampler. Random weights rarely draw the speech EOS, so each run makes
    max_tokens_per_chunk codes."""
    import omni_engine as oe

    path = model_dir / "tts" / "MiniCPM-o-4_5-tts-F16.gguf"
    if not path.is_file():
        return
    projector = model_dir / "tts" / "MiniCPM-o-4_5-projector-F16.gguf"
    start = time.perf_counter()
    tts = oe.Tts(str(path), str(projector), use_gpu=args.n_gpu_layers != 0, n_threads=args.threads)
    metrics.add("tts_load_s", "s", "Tts() construction (TTS + projector files)", time.perf_counter() - start)
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.integers(1000, 100000, size=10)]
    hidden = rng.standard_normal((10, tts.n_llm_embd)).astype(np.float32)

    def timed_chunk(n_codes: int) -> tuple[float, int]:
        generator = oe.SpeechGenerator(tts, oe.TtsSamplingParams(seed=0, max_tokens_per_chunk=n_codes))
        generator.start_turn()
        start = time.perf_counter()
        codes = generator.speak_chunk(ids, hidden, False)
        return time.perf_counter() - start, len(codes)

    timed_chunk(8)  # warm-up
    for _ in range(args.runs):
        seconds, n_first = timed_chunk(25)
        if n_first == 25:
            label = "first 25 speech codes of a 10-token text chunk (condition, prefill, 25 draws)"
            metrics.add("tts_first_25_ms", "ms", label, seconds * 1e3)
        seconds, n_codes = timed_chunk(TTS_BENCH_CODES)
        prefill_s, _ = timed_chunk(1)
        if n_codes > 1:
            per_code = (seconds - prefill_s) * 1e3 / (n_codes - 1)
            metrics.add(
                "tts_ms_per_code", "ms", "one speech code: TTS step + sampler (chunk of 100)", per_code
            )


T2W_DIR_NAMES = ("token2wav-gguf", "token2wav")
T2W_WINDOW_TOKENS = 25  # new speech tokens per Token2Wav window (1 s of audio)
T2W_BENCH_WINDOWS = 10  # windows per timed stream: the first one and 9 steady ones
N_SPEECH_CODES = 6561


def find_token2wav_dir(model_dir: Path) -> Path | None:
    """The folder with the Token2Wav files (token2wav-gguf/, else token2wav/); None if there is none."""
    for name in T2W_DIR_NAMES:
        if (model_dir / name / "encoder.gguf").is_file():
            return model_dir / name
    return None


@dataclass
class Token2WavStream:
    """One timed stream: a push of 25 tokens per window (each runs exactly one window), then the final
    push of no tokens, which runs the last window (the 3 lookahead tokens) and flushes the audio."""

    window_ms: list[float]
    window_samples: list[int]
    final_ms: float
    final_samples: int

    def figures(self) -> dict[str, Any]:
        """first_window_ms: the push of the first 25 tokens -> its PCM (the stage's share of the time to
        first audio); steady_window_ms: the other windows; ms_per_audio_s: steady compute per second of
        audio; rtf: the whole stream's compute / its audio."""
        steady_ms = self.window_ms[1:]
        steady_s = sum(self.window_samples[1:]) / PCM_RATE
        total_s = (sum(self.window_samples) + self.final_samples) / PCM_RATE
        total_ms = sum(self.window_ms) + self.final_ms
        return {
            "first_window_ms": self.window_ms[0],
            "steady_window_ms": steady_ms,
            "ms_per_audio_s": sum(steady_ms) / steady_s if steady_s > 0 else None,
            "rtf": total_ms / 1e3 / total_s if total_s > 0 else None,
        }


def run_token2wav_stream(t2w: Any, tokens: list[int]) -> Token2WavStream:
    t2w.reset()
    window_ms, window_samples = [], []
    for at in range(0, len(tokens), T2W_WINDOW_TOKENS):
        start = time.perf_counter()
        pcm = t2w.push(tokens[at : at + T2W_WINDOW_TOKENS], False)
        window_ms.append((time.perf_counter() - start) * 1e3)
        window_samples.append(len(pcm))
    start = time.perf_counter()
    pcm = t2w.push([], True)
    return Token2WavStream(window_ms, window_samples, (time.perf_counter() - start) * 1e3, len(pcm))


def bench_token2wav(args: argparse.Namespace, model_dir: Path, metrics: Metrics) -> None:
    """Token2Wav alone (speech tokens -> 24 kHz PCM) on CPU threads and, with --n-gpu-layers != 0 on a
    build with a GPU, on the GPU too."""
    import omni_engine as oe

    t2w_dir = find_token2wav_dir(model_dir)
    if t2w_dir is None:
        return
    devices = [("cpu", False)]
    if args.n_gpu_layers != 0 and oe.system_info()["has_gpu"]:
        devices.append(("gpu", True))
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(0, N_SPEECH_CODES, size=T2W_BENCH_WINDOWS * T2W_WINDOW_TOKENS)]
    for device, use_gpu in devices:
        start = time.perf_counter()
        t2w = oe.Token2Wav(str(t2w_dir), use_gpu=use_gpu, n_threads=args.threads)
        load_s = time.perf_counter() - start
        metrics.add(f"t2w_{device}_load_s", "s", f"Token2Wav() construction ({device})", load_s)
        run_token2wav_stream(t2w, tokens[: 2 * T2W_WINDOW_TOKENS])  # warm-up
        for _ in range(args.runs):
            record_token2wav(run_token2wav_stream(t2w, tokens).figures(), device, metrics)
        del t2w


def record_token2wav(figures: dict[str, Any], device: str, metrics: Metrics) -> None:
    prefix = f"t2w_{device}"
    label = f"({device}) push of the first 25 tokens -> its PCM (first window, 0.84 s of audio)"
    metrics.add(f"{prefix}_first_window_ms", "ms", label, figures["first_window_ms"])
    for window_ms in figures["steady_window_ms"]:
        label = f"({device}) one steady window: 25 tokens -> 1 s of audio (mel + vocoder)"
        metrics.add(f"{prefix}_window_ms", "ms", label, window_ms)
    label = f"({device}) steady windows: compute per second of audio"
    metrics.add(f"{prefix}_ms_per_audio_s", "ms", label, figures["ms_per_audio_s"])
    label = f"({device}) whole stream ({T2W_BENCH_WINDOWS * T2W_WINDOW_TOKENS} tokens): compute / audio"
    metrics.add(f"{prefix}_rtf", "x", label, figures["rtf"])


def prefill_and_decode(llm: Any, prompt: list[int], steps: int) -> tuple[float, float]:
    llm.clear()
    start = time.perf_counter()
    logits = llm.eval_tokens(prompt)
    prefilled = time.perf_counter()
    token = int(np.argmax(logits))
    for _ in range(steps):
        logits, _hidden = llm.step(token)
        token = int(np.argmax(logits))
    return prefilled - start, time.perf_counter() - prefilled


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine_info() -> dict[str, Any]:
    import omni_engine as oe

    return {
        "omni_engine": oe.__version__,
        "llama_cpp_commit": oe.LLAMA_CPP_COMMIT,
        "system_info": oe.system_info(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def format_table(results: dict[str, Any]) -> str:
    rows = [("metric", "unit", "median", "mean", "min", "max", "runs")]
    for name, summary in results["metrics"].items():
        if not summary["runs"]:
            rows.append((name, summary["unit"], "-", "-", "-", "-", "0"))
            continue
        cells = (f"{summary[key]:.2f}" for key in ("median", "mean", "min", "max"))
        rows.append((name, summary["unit"], *cells, str(len(summary["runs"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    model = results["model"]
    header = [f"model {model['llm_path']} ({model['size_gb']:.2f} GB), backend {model['backend']}"]
    if results.get("vision"):
        header.append(vision_header(results["vision"]))
    return "\n".join([*header, *lines])


def vision_header(vision: dict[str, Any]) -> str:
    """The table's line about the vision file: layers run, backend and the timed images."""
    images = ", ".join(
        f"{image['name']} {image['size'][0]}x{image['size'][1]} ({len(image['chunks'])} chunks)"
        for image in vision["images"]
    )
    return (
        f"vision {vision['path']} ({vision['size_gb']:.2f} GB), backend {vision['backend']}, "
        f"{vision['n_layers']} of {vision['n_layers_in_file']} layers, slices of {vision['image_size']}; "
        f"images: {images}"
    )


def make_model_dir(args: argparse.Namespace) -> Path:
    from omni_app import bench_models

    start = time.perf_counter()
    paths = bench_models.write_full_size_model_dir(args.make_full_size_models, args.quant, args.n_layer)
    seconds = time.perf_counter() - start
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB)", flush=True)
    print(f"full-size files written in {seconds:.1f} s", flush=True)
    return args.make_full_size_models


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = make_model_dir(args) if args.make_full_size_models is not None else args.model_dir
    llm_path = Path(args.llm_file) if args.llm_file else config.find_llm_file(model_dir)
    metrics = Metrics()
    text = bench_llm(args, str(llm_path), metrics)
    info = bench_engine(args, model_dir, text, metrics)
    vision = bench_vision(args, model_dir, metrics)
    bench_audio(args, model_dir, metrics)
    bench_tts(args, model_dir, metrics)
    bench_token2wav(args, model_dir, metrics)
    metrics.add("peak_rss_mb", "MB", "peak resident memory of this process", peak_rss_mb())
    if Path(info["llm_path"]).resolve() != llm_path.resolve():
        print(
            f"bench: warning: the engine loaded {info['llm_path']}, the Llm stage {llm_path}", file=sys.stderr
        )
    settings_keys = ("n_ctx", "n_gpu_layers", "threads", "prompt_tokens", "gen_tokens", "runs")
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": {
            "model_dir": str(model_dir),
            "llm_path": str(llm_path),
            "size_gb": llm_path.stat().st_size / 1e9,
            "backend": info.get("backend"),
            "engine_info": info,
        },
        "vision": vision,
        "settings": {key: getattr(args, key) for key in settings_keys},
        "metrics": metrics.as_dict(),
    }


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem is not None:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    results = run_bench(args)
    print(format_table(results))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

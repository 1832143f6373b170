"""Pure logic of the bench's audio figures (omni_app.bench): speaking-turn timing, the Token2Wav stream
figures and windowing, the summary and table. The engine itself is benchmarked by .ci/run's bench smoke."""

from __future__ import annotations

import numpy as np
import pytest

from omni_app import bench


def test_speech_turn_figures_time_from_generate_to_the_first_and_last_audio():
    generate_at = 100.0
    audio = [(100.5, 20160), (101.25, 24000), (101.75, 24000), (102.0, 2880)]
    figures = bench.speech_turn_figures(generate_at, audio)
    assert figures == pytest.approx({"first_audio_ms": 500.0, "audio_s": 2.96, "rtf": 2.0 / 2.96})


def test_speech_turn_figures_are_none_without_audio():
    assert bench.speech_turn_figures(1.0, []) is None
    assert bench.speech_turn_figures(1.0, [(2.0, 0)]) is None


def test_token2wav_stream_figures_split_the_first_window_from_the_steady_ones():
    stream = bench.Token2WavStream(
        window_ms=[400.0, 200.0, 300.0],
        window_samples=[20160, 24000, 24000],
        final_ms=60.0,
        final_samples=3840,
    )
    figures = stream.figures()
    assert figures["first_window_ms"] == 400.0
    assert figures["steady_window_ms"] == [200.0, 300.0]
    assert figures["ms_per_audio_s"] == pytest.approx(250.0)  # 500 ms for 2 s of steady audio
    total_s = (20160 + 48000 + 3840) / 24000  # 3.0 s
    assert figures["rtf"] == pytest.approx(0.96 / total_s)


def test_token2wav_stream_figures_without_audio_have_no_rates():
    figures = bench.Token2WavStream([5.0], [0], 1.0, 0).figures()
    assert (figures["ms_per_audio_s"], figures["rtf"]) == (None, None)


class FakeToken2Wav:
    """Stand-in with the contract's window arithmetic (a window per 28 buffered tokens, advance 25; k windows
    have emitted 24000 k - 3840 samples, a stream of N tokens 960 (3 + N)): tests only how the bench pushes
    tokens, not the engine."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []
        self.resets = 0
        self.buffered, self.windows, self.pushed, self.emitted = 3, 0, 0, 0

    def reset(self) -> None:
        self.resets += 1
        self.buffered, self.windows, self.pushed, self.emitted = 3, 0, 0, 0

    def push(self, tokens: list[int], final: bool) -> np.ndarray:
        self.calls.append((len(tokens), final))
        self.buffered += len(tokens)
        self.pushed += len(tokens)
        while self.buffered >= 28:
            self.buffered -= 25
            self.windows += 1
        total = 960 * (3 + self.pushed) if final else max(24000 * self.windows - 3840, 0)
        out = np.zeros(total - self.emitted, dtype=np.float32)
        self.emitted = total
        return out


def test_run_token2wav_stream_pushes_one_window_per_25_tokens_then_the_final_push():
    fake = FakeToken2Wav()
    tokens = list(range(4 * bench.T2W_WINDOW_TOKENS))
    stream = bench.run_token2wav_stream(fake, tokens)
    assert fake.resets == 1
    assert fake.calls == [(25, False)] * 4 + [(0, True)]
    assert stream.window_samples == [20160, 24000, 24000, 24000]
    assert stream.final_samples == 960 * 103 - 20160 - 3 * 24000
    assert len(stream.window_ms) == 4 and all(ms >= 0 for ms in stream.window_ms)


def test_the_bench_stream_has_at_least_eight_steady_windows():
    assert bench.T2W_BENCH_WINDOWS - 1 >= 8


def test_find_token2wav_dir_prefers_token2wav_gguf(tmp_path):
    assert bench.find_token2wav_dir(tmp_path) is None
    (tmp_path / "token2wav").mkdir()
    (tmp_path / "token2wav" / "encoder.gguf").write_bytes(b"")
    assert bench.find_token2wav_dir(tmp_path) == tmp_path / "token2wav"
    (tmp_path / "token2wav-gguf").mkdir()
    assert bench.find_token2wav_dir(tmp_path) == tmp_path / "token2wav"  # an empty folder does not count
    (tmp_path / "token2wav-gguf" / "encoder.gguf").write_bytes(b"")
    assert bench.find_token2wav_dir(tmp_path) == tmp_path / "token2wav-gguf"


def test_metric_summary_has_mean_median_min_max_and_every_value():
    metrics = bench.Metrics()
    for value in (4.0, 1.0, 2.0, 5.0):
        metrics.add("t2w_cpu_window_ms", "ms", "one window", value)
    metrics.add("t2w_cpu_window_ms", "ms", "one window", None)  # a run without a value adds nothing
    metrics.add("empty", "ms", "never measured", None)
    summary = metrics.as_dict()
    assert summary["t2w_cpu_window_ms"] == {
        "unit": "ms",
        "description": "one window",
        "median": 3.0,
        "mean": 3.0,
        "min": 1.0,
        "max": 5.0,
        "runs": [4.0, 1.0, 2.0, 5.0],
    }
    assert summary["empty"] == {"unit": "ms", "description": "never measured", "runs": []}


def test_format_table_shows_mean_and_the_value_count():
    metrics = bench.Metrics()
    for value in (1.0, 2.0, 6.0):
        metrics.add("t2w_cpu_rtf", "x", "whole stream", value)
    metrics.add("engine_first_audio_ms", "ms", "no audio", None)
    results = {
        "model": {"llm_path": "m.gguf", "size_gb": 1.5, "backend": "CPU"},
        "metrics": metrics.as_dict(),
    }
    lines = bench.format_table(results).splitlines()
    assert lines[0] == "model m.gguf (1.50 GB), backend CPU"
    assert lines[1].split() == ["metric", "unit", "median", "mean", "min", "max", "runs"]
    assert lines[2].split() == ["t2w_cpu_rtf", "x", "2.00", "3.00", "1.00", "6.00", "3"]
    assert lines[3].split() == ["engine_first_audio_ms", "ms", "-", "-", "-", "-", "0"]

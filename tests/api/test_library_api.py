"""The library API for scripts and notebooks (omni_app.Assistant) on the real engine and tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from omni_app import Assistant, BusyError

LONG_ANSWER = 2000


TTS_SAMPLING = {"max_tokens_per_chunk": 20, "seed": 5}  # random tiny TTS weights rarely end a chunk


@pytest.fixture(scope="module")
def assistant(tiny_model_dir):
    with Assistant(
        tiny_model_dir, language="en", n_threads=2, temperature=0, seed=3, tts_sampling=TTS_SAMPLING
    ) as bot:
        yield bot


def test_settings_are_read_back_from_the_engine_options(assistant):
    assert assistant.settings["sampling"]["temperature"] == 0.0
    assert assistant.settings["sampling"]["seed"] == 3
    assert assistant.settings["language"] == "en" and assistant.settings["media_type"] == "audio"
    tts = assistant.settings["tts_sampling"]
    assert (tts["max_tokens_per_chunk"], tts["seed"], tts["temperature"], tts["top_k"]) == (20, 5, 0.8, 25)


def test_stream_yields_text_and_speech_then_stats_then_end_of_turn(assistant):
    events = list(assistant.stream("Hello!", max_new_tokens=4))
    kinds = [event["type"] for event in events]
    assert kinds[-2:] == ["stats", "end_of_turn"] and set(kinds[:-2]) == {"text", "tts_chunk", "audio"}
    assert events[-1]["reason"] == "max_tokens"
    assert events[-2]["decode_tokens"] == 4
    chunks = [event for event in events if event["type"] == "tts_chunk"]
    assert [chunk["chunk_idx"] for chunk in chunks] == [0]  # 4 tokens: one (last) chunk
    assert chunks[0]["text"] == "".join(event["text"] for event in events if event["type"] == "text")
    assert 0 < len(chunks[0]["speech_tokens"]) == chunks[0]["n_speech_tokens"] <= 20
    audio = [event["pcm"] for event in events if event["type"] == "audio"]
    samples = sum(pcm.size for pcm in audio)
    assert samples == 960 * (3 + chunks[0]["n_speech_tokens"]) == events[-2]["audio_samples"]
    assert events[-2]["speech_tokens"] == chunks[0]["n_speech_tokens"]


def test_a_text_only_assistant_does_not_speak(tiny_model_dir):
    with Assistant(tiny_model_dir, language="en", n_threads=2, temperature=0, speak=False) as bot:
        events = list(bot.stream("Hello!", max_new_tokens=3))
    assert {event["type"] for event in events} == {"text", "stats", "end_of_turn"}
    assert events[-2]["speech_tokens"] == 0


def test_chat_is_deterministic_after_reset(assistant):
    assistant.reset()
    first = assistant.chat("Name a colour.", max_new_tokens=6)
    assert first != ""
    assistant.reset()
    assert assistant.chat("Name a colour.", max_new_tokens=6) == first
    assert assistant.engine.n_past > assistant.engine.n_keep


def test_closing_a_stream_early_stops_the_answer(assistant):
    stream = assistant.stream("Tell me a long story.", max_new_tokens=LONG_ANSWER)
    assert next(stream)["type"] == "text"
    stream.close()
    assert assistant.engine.state == "idle"
    assert assistant.chat("Again?", max_new_tokens=2) != ""


def test_one_answer_at_a_time(assistant):
    stream = assistant.stream("Tell me a long story.", max_new_tokens=LONG_ANSWER)
    next(stream)
    with pytest.raises(BusyError):
        next(assistant.stream("interrupting"))
    assistant.stop()
    rest = list(stream)
    assert rest[-1]["type"] == "end_of_turn" and rest[-1]["reason"] == "stop"


def test_unknown_sampling_option_is_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="temprature"):
        Assistant(tiny_model_dir, temprature=0)
    with pytest.raises(ValueError, match="unknown TTS sampling parameter\\(s\\): top_n"):
        Assistant(tiny_model_dir, tts_sampling={"top_n": 3})


def test_chat_with_an_image_adds_it_before_the_text_and_it_changes_the_answer(tiny_model_dir):
    with Assistant(tiny_model_dir, media_type="omni", n_threads=2, temperature=0, speak=False) as bot:
        n_keep = bot.engine.n_keep
        gradient = np.tile(np.arange(0, 240, 4, dtype=np.uint8)[None, :, None], (40, 1, 3))  # 60x40
        with_image = bot.chat("What is this?", max_new_tokens=6, image=gradient)
        tokens = bot.engine.context_tokens()
        assert tokens[n_keep + 1 : n_keep + 65] == [-1] * 64  # <image>, the 64 overview rows, </image>, text
        bot.reset()
        assert bot.chat("What is this?", max_new_tokens=6, image=np.zeros_like(gradient)) != with_image
        bot.reset()
        with pytest.raises(ValueError, match="rgb"):
            bot.chat("What is this?", image=gradient.astype(np.float32))
        assert bot.chat("What is this?", max_new_tokens=6, image=gradient) == with_image

"""omni_app.audio.decode_audio: sound files of any rate/channel count and raw float32 -> 16 kHz mono float32,
and a clear error for every kind of unusable input."""

from __future__ import annotations

import io

import librosa
import numpy as np
import pytest
import soundfile

from omni_app.audio import RESAMPLE_TYPE, AudioDecodeError, AudioTooLongError, decode_audio

LIMIT_S = 60.0


def tone(seconds: float, rate: int, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def encode(samples: np.ndarray, rate: int, file_format: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("rate", "seconds", "expected"),
    [(44100, 1.0, 16000), (48000, 1.0, 16000), (8000, 1.0, 16000), (22050, 0.5, 8000), (44100, 0.01, 160)],
)
def test_resampled_length_is_exact(rate, seconds, expected):
    pcm = decode_audio(encode(tone(seconds, rate), rate, subtype="FLOAT"), LIMIT_S)
    assert pcm.dtype == np.float32 and pcm.ndim == 1 and pcm.flags.c_contiguous
    assert pcm.shape == (expected,)


def test_resampling_is_librosa_soxr_hq_of_the_decoded_samples():
    samples = tone(1.0, 44100)
    pcm = decode_audio(encode(samples, 44100, subtype="FLOAT"), LIMIT_S)
    expected = librosa.resample(samples, orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    assert RESAMPLE_TYPE == "soxr_hq"
    np.testing.assert_array_equal(pcm, expected)
    # still a 440 Hz tone: the spectrum peaks at 440 Hz (1 Hz bins for 1 s)
    assert int(np.argmax(np.abs(np.fft.rfft(pcm)))) == 440


def test_16k_mono_float_wav_is_returned_unchanged():
    samples = tone(0.75, 16000)
    np.testing.assert_array_equal(decode_audio(encode(samples, 16000, subtype="FLOAT"), LIMIT_S), samples)


def test_stereo_is_downmixed_to_the_mean_of_the_channels():
    left, right = tone(0.5, 16000, 440.0), tone(0.5, 16000, 1000.0, amplitude=0.25)
    pcm = decode_audio(encode(np.stack([left, right], axis=1), 16000, subtype="FLOAT"), LIMIT_S)
    np.testing.assert_allclose(pcm, (left + right) / 2, rtol=0, atol=1e-7)


def test_four_channels_at_48k_are_downmixed_then_resampled():
    channels = np.stack([tone(1.0, 48000, f) for f in (200.0, 300.0, 400.0, 500.0)], axis=1)
    pcm = decode_audio(encode(channels, 48000, subtype="FLOAT"), LIMIT_S)
    mean = channels.mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(
        pcm, librosa.resample(mean, orig_sr=48000, target_sr=16000, res_type="soxr_hq")
    )


@pytest.mark.parametrize(("file_format", "tolerance"), [("FLAC", 1e-4), ("OGG", 0.05), ("WAV", 1e-4)])
def test_flac_ogg_and_int16_wav_decode_close_to_the_signal(file_format, tolerance):
    samples = tone(1.0, 16000)
    pcm = decode_audio(encode(samples, 16000, file_format), LIMIT_S)
    assert pcm.shape == (16000,)
    # OGG (lossy) is compared after its codec delay settles
    np.testing.assert_allclose(pcm[2000:-2000], samples[2000:-2000], rtol=0, atol=tolerance)


def test_raw_float32_passes_through_bit_exact():
    samples = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    samples[:4] = [0.0, -0.0, 1e-38, -3.5]
    pcm = decode_audio(samples.astype("<f4").tobytes(), LIMIT_S)
    assert pcm.dtype == np.float32 and pcm.flags.writeable
    np.testing.assert_array_equal(pcm.view(np.uint32), samples.view(np.uint32))


def test_raw_float32_of_exactly_the_limit_is_accepted():
    assert decode_audio(np.zeros(32000, "<f4").tobytes(), 2.0).shape == (32000,)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"hello",
            "audio cannot be decoded: it is not a sound file soundfile can read (WAV, FLAC, OGG, ...) and "
            "not raw float32 16 kHz samples (5 bytes is not a multiple of 4)",
        ),
        (b"", "audio is empty (0 samples)"),
        (encode(np.zeros((0, 1), np.float32), 44100), "audio is empty (0 samples)"),
        (
            b"RIFF\x10\x00\x00\x00WAVEfmt ",
            "audio looks like a WAV file but cannot be decoded (Error in WAV file. No 'data' chunk marker.)",
        ),
    ],
)
def test_undecodable_and_empty_input_is_rejected(data, message):
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(data, LIMIT_S)
    assert str(caught.value) == message
    assert caught.value.field == "audio" and not isinstance(caught.value, AudioTooLongError)


def test_nan_and_inf_samples_are_rejected_with_their_position():
    raw = np.zeros(100, np.float32)
    raw[7], raw[50] = np.nan, np.inf
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(raw.tobytes(), LIMIT_S)
    assert str(caught.value) == "audio contains NaN or infinite samples (2 of 100, the first at sample 7)"
    float_wav = encode(raw, 22050, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"^audio contains NaN or infinite samples \(2 of 100, "):
        decode_audio(float_wav, LIMIT_S)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros(48001, "<f4").tobytes(), "audio is 3.00 s long; the limit is 3 s (--max-audio-seconds)"),
        (encode(tone(4.0, 44100), 44100), "audio is 4.00 s long; the limit is 3 s (--max-audio-seconds)"),
        (
            encode(tone(10.0, 8000), 8000, "FLAC"),
            "audio is 10.00 s long; the limit is 3 s (--max-audio-seconds)",
        ),
    ],
)
def test_audio_longer_than_the_limit_is_rejected(data, message):
    with pytest.raises(AudioTooLongError) as caught:
        decode_audio(data, 3.0)
    assert str(caught.value) == message


def test_field_name_is_used_in_messages():
    with pytest.raises(AudioDecodeError, match=r"^ref_audio is empty \(0 samples\)$") as caught:
        decode_audio(b"", LIMIT_S, field="ref_audio")
    assert caught.value.field == "ref_audio"

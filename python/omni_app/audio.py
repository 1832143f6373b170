"""Decode user audio for the engine: any file soundfile reads, or raw float32 samples, as 16 kHz mono float32.

The reference demo accepts both a sound file and the raw little-endian float32 16 kHz samples of its
recorder; so does :func:`decode_audio`. Sound files of any rate and channel count are downmixed (mean over
the channels) and resampled with librosa. Every rejection is an :class:`AudioDecodeError` whose message says
what is wrong; :class:`AudioTooLongError` (a subclass) is the one the server answers with 413.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile

SAMPLE_RATE = 16000
RAW_SAMPLE_BYTES = 4
# soxr is a hard dependency of librosa (>= 0.10), so its high-quality mode is always available.
RESAMPLE_TYPE = "soxr_hq"
# Leading bytes of containers soundfile reads: data that starts like one of these and fails to decode is a
# broken file, not raw samples.
CONTAINER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"RIFF", "WAV"),
    (b"RIFX", "WAV"),
    (b"RF64", "WAV"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b"FORM", "AIFF"),
    (b"caff", "CAF"),
    (b"ID3", "MP3"),
)


class AudioDecodeError(ValueError):
    """The audio cannot be used; the message starts with the request field's name."""

    def __init__(self, message: str, field: str = "audio") -> None:
        super().__init__(message)
        self.field = field


class AudioTooLongError(AudioDecodeError):
    """The audio is longer than the configured limit."""


def decode_audio(data: bytes, max_seconds: float, field: str = "audio") -> np.ndarray:
    """``data`` (a sound file, or raw little-endian float32 16 kHz samples) as 1-D float32 16 kHz mono."""
    sound_file = _open_sound_file(data, field)
    if sound_file is None:
        return _raw_samples(data, max_seconds, field)
    with sound_file:
        return _decode_sound_file(sound_file, max_seconds, field)


def _open_sound_file(data: bytes, field: str) -> soundfile.SoundFile | None:
    """The opened file, or None if ``data`` is not a sound file (and does not start like one)."""
    try:
        return soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        container = next((name for magic, name in CONTAINER_MAGIC if data.startswith(magic)), None)
        if container is not None:
            reason = getattr(exc, "error_string", None) or str(exc)
            raise AudioDecodeError(
                f"{field} looks like a {container} file but cannot be decoded ({reason})", field
            ) from exc
        return None


def _decode_sound_file(sound_file: soundfile.SoundFile, max_seconds: float, field: str) -> np.ndarray:
    rate = sound_file.samplerate
    if sound_file.frames > 0:
        _check_length(sound_file.frames, rate, max_seconds, field)
    # Never read more than the limit allows, whatever the header claims (a compressed file can expand a lot).
    try:
        frames = sound_file.read(frames=math.floor(max_seconds * rate) + 1, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioDecodeError(f"{field} cannot be decoded: {reason}", field) from exc
    _check_length(len(frames), rate, max_seconds, field)
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    _check_samples(mono, field)
    if rate != SAMPLE_RATE:
        import librosa  # slow first import (~1-3 s); deferred so the package imports fast

        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE, res_type=RESAMPLE_TYPE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _raw_samples(data: bytes, max_seconds: float, field: str) -> np.ndarray:
    if len(data) % RAW_SAMPLE_BYTES != 0:
        raise AudioDecodeError(
            f"{field} cannot be decoded: it is not a sound file soundfile can read (WAV, FLAC, OGG, ...) "
            f"and not raw float32 16 kHz samples ({len(data)} bytes is not a multiple of {RAW_SAMPLE_BYTES})",
            field,
        )
    _check_length(len(data) // RAW_SAMPLE_BYTES, SAMPLE_RATE, max_seconds, field)
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    _check_samples(samples, field)
    return samples


def _check_length(n_frames: int, rate: int, max_seconds: float, field: str) -> None:
    if n_frames == 0:
        raise AudioDecodeError(f"{field} is empty (0 samples)", field)
    seconds = n_frames / rate
    if seconds > max_seconds:
        raise AudioTooLongError(
            f"{field} is {seconds:.2f} s long; the limit is {max_seconds:g} s (--max-audio-seconds)", field
        )


def _check_samples(samples: np.ndarray, field: str) -> None:
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.argmin(finite))
        raise AudioDecodeError(
            f"{field} contains NaN or infinite samples ({int(np.count_nonzero(~finite))} of {samples.size}, "
            f"the first at sample {first})",
            field,
        )


def warm_up() -> None:
    """Import librosa's resampler and run it once, so that the first request does not pay for that."""
    import librosa

    librosa.resample(
        np.zeros(441, dtype=np.float32), orig_sr=44100, target_sr=SAMPLE_RATE, res_type=RESAMPLE_TYPE
    )

"""Reading and writing audio: float32 mono at the model's sample rate.

Everything the toolkit feeds to a speech encoder goes through :func:`load_audio`, so the rules live
in one place: channels are averaged (a stereo recording of one speaker is the same speech twice),
the signal is resampled with soxr when the file's rate differs from the requested one, and any
problem with the file surfaces as :class:`AudioError` naming the file, never as a bare libsndfile
message that leaves the user guessing which of ten thousand clips was bad.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechlm.utils import atomic_open

__all__ = ["AudioError", "audio_info", "load_audio", "write_audio"]


class AudioError(RuntimeError):
    """An audio file is missing, unreadable/corrupt, or a requested segment lies outside it."""


def _check_exists(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise AudioError(f"audio file not found: {p}")
    return p


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """Return ``(sample_rate, frames, channels)`` from the file header, without decoding samples.

    Raises :class:`AudioError` if the file is missing or libsndfile cannot parse its header.
    """
    p = _check_exists(path)
    try:
        info = sf.info(p)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError variously
        raise AudioError(f"cannot read audio header (corrupt or unsupported format): {p}: {e}") from e
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"invalid audio header (rate {info.samplerate}, channels {info.channels}): {p}")
    return int(info.samplerate), int(info.frames), int(info.channels)


def load_audio(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    sample_rate: int | None = 16000,
) -> np.ndarray:
    """Load ``[start, start + duration)`` seconds of ``path`` as a 1-D float32 mono array.

    Args:
        path: any format libsndfile reads (WAV, FLAC, OGG, and MP3 with libsndfile >= 1.1).
        start: offset in seconds into the file.
        duration: seconds to read; ``None`` reads to the end. A segment that runs past the end of
            the file is returned shorter (manifest durations are often rounded), not padded.
        sample_rate: target rate; resampled with soxr (high quality) if the file differs.
            ``None`` keeps the file's own rate.

    Raises:
        AudioError: file missing or corrupt, ``start`` negative or past the end of the file.
    """
    sr, frames, _ = audio_info(path)
    p = os.fspath(path)
    if start < 0:
        raise AudioError(f"negative start {start} s: {p}")
    first = int(round(start * sr))
    if first >= frames and frames > 0:
        raise AudioError(f"start {start:.3f} s is past the end of the file ({frames / sr:.3f} s): {p}")
    n = -1 if duration is None else max(0, int(round(duration * sr)))
    try:
        # always_2d so mono and multi-channel files take the same path; float32 avoids a copy later.
        x, _ = sf.read(p, start=first, frames=n, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"cannot decode audio (corrupt or truncated file?): {p}: {e}") from e
    # Average channels rather than taking channel 0: some recordings put the voice mostly in one side.
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if sample_rate is not None and sr != sample_rate and mono.size > 0:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Atomically write ``samples`` (1-D mono or ``(frames, channels)``) as WAV/FLAC/OGG by suffix.

    Atomic (temp file + rename) so an interrupted corpus build never leaves a truncated file that a
    later run would mistake for a finished one.
    """
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported audio suffix {path.suffix!r} (use .wav, .flac or .ogg): {path}")
    if fmt == "OGG":
        subtype = "VORBIS"
    data = np.asarray(samples, dtype=np.float32)
    # Clip so float overshoot from resampling wraps neither PCM_16 nor FLAC.
    data = np.clip(data, -1.0, 1.0)
    with atomic_open(path, "wb") as f:
        sf.write(f, data, sample_rate, format=fmt, subtype=subtype)
    return path

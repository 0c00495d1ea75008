"""Uploaded audio, decoded from memory within limits; every refusal is an :class:`UploadError` with the HTTP
status and a message that names the problem.

Nothing a client sends becomes a path: bytes are read through ``io.BytesIO`` by libsndfile (WAV, FLAC,
OGG/Opus, MP3 with libsndfile >= 1.1), channels are averaged and the signal is resampled to 16 kHz with soxr,
as :func:`speechlm.data.audio.load_audio` does for files.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "webm", "m4a", "mp4", "mpeg", "mpga", "pcm16")
"""``input_audio.format`` values accepted (OpenAI's plus those its transcription route takes); the bytes decide."""


class UploadError(Exception):
    """A request the server refuses: ``status`` (400, 401, 413, 415, ...) and a message for the client."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 25 * 1024 * 1024
    """25 MB: OpenAI's own limit for /v1/audio/transcriptions uploads."""
    max_audio_seconds: float = 600.0
    """Longest audio accepted (long audio is split at pauses; this bounds the work one request can ask for)."""


def decode_audio(data: bytes, limits: Limits, what: str = "the audio") -> np.ndarray:
    """Bytes of an audio file -> 16-kHz mono float32, or an UploadError naming what is wrong."""
    if len(data) == 0:
        raise UploadError(400, f"{what} is empty (0 bytes)", "empty_file")
    if len(data) > limits.max_upload_bytes:
        raise UploadError(413, f"{what} is {len(data)} bytes; this server takes at most {limits.max_upload_bytes} bytes",
                          "file_too_large")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # libsndfile's errors vary by format: LibsndfileError, RuntimeError, TypeError
        raise UploadError(415, f"{what} is not audio this server can decode (WAV, FLAC, OGG, MP3): {_short(e)}",
                          "unsupported_audio") from e
    if info.samplerate <= 0 or info.channels <= 0:
        raise UploadError(400, f"{what} has an invalid header (rate {info.samplerate}, channels {info.channels})", "corrupt_audio")
    seconds = info.frames / info.samplerate
    if seconds > limits.max_audio_seconds:
        raise UploadError(413, f"{what} is {seconds:.1f} s long; this server takes at most {limits.max_audio_seconds:g} s",
                          "audio_too_long")
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise UploadError(400, f"{what} is corrupt or truncated: {_short(e)}", "corrupt_audio") from e
    if x.shape[0] == 0:
        raise UploadError(400, f"{what} holds no audio samples (0 s)", "empty_audio")
    if x.shape[0] / sr > limits.max_audio_seconds:  # headers of MP3 and friends may under-report
        raise UploadError(413, f"{what} is {x.shape[0] / sr:.1f} s long; this server takes at most {limits.max_audio_seconds:g} s",
                          "audio_too_long")
    if not np.isfinite(x).all():
        raise UploadError(400, f"{what} holds NaN or infinite samples", "corrupt_audio")
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_base64(data: object, limits: Limits, what: str) -> bytes:
    """``input_audio.data`` -> bytes; the size limit applies before decoding (base64 is 4/3 of the bytes)."""
    if not isinstance(data, str) or not data:
        raise UploadError(400, f"{what}.data must be a non-empty base64 string")
    if len(data) > limits.max_upload_bytes * 4 // 3 + 4:
        raise UploadError(413, f"{what} is over {limits.max_upload_bytes} bytes; this server takes at most that", "file_too_large")
    if data.startswith("data:") and "," in data[:100]:  # a data: URL, as browsers write them
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise UploadError(400, f"{what}.data is not valid base64: {_short(e)}") from e


def _short(e: Exception) -> str:
    return str(e).replace("\n", " ")[:200]

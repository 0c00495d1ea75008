"""Tiny dummy-data factories shared by the test suite.

Everything here is synthetic (tones and noise), a few kilobytes, deterministic given ``seed``, and
written under the caller's ``tmp_path`` so tests never touch real corpora or each other's files.

Import with ``from factories import make_manifest`` (pytest puts ``tests/`` on ``sys.path``) or
``from tests.factories import ...`` when running from the repository root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

__all__ = [
    "BAD_LINE_KINDS",
    "VOCAB",
    "make_bad_line_manifest",
    "make_corrupt_file",
    "make_manifest",
    "make_sine_or_noise_wav",
]

VOCAB = ("yes", "no", "up", "down", "left", "right", "stop", "go", "one", "two", "three", "red", "blue")
"""Words the dummy transcripts are drawn from."""


def make_sine_or_noise_wav(
    path: str | Path,
    seconds: float,
    sr: int = 16000,
    kind: str = "sine",
    freq: float = 440.0,
    channels: int = 1,
    seed: int = 0,
) -> Path:
    """Write a ``seconds``-long 16-bit file (format from the suffix: .wav/.flac) and return its path.

    ``kind="sine"``: a tone at ``freq`` Hz (amplitude 0.5); ``"noise"``: white noise (std 0.1).
    With ``channels > 1`` each channel gets the signal scaled differently (channel c times 1/(c+1)),
    so a test can check that channels are averaged, not just the first one taken.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sr))
    if kind == "sine":
        x = 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr)
    elif kind == "noise":
        x = np.random.default_rng(seed).normal(0.0, 0.1, n)
    else:
        raise ValueError(f"kind must be 'sine' or 'noise', got {kind!r}")
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x / (c + 1) for c in range(channels)], axis=1)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def make_manifest(
    tmp_path: str | Path,
    n: int = 8,
    sr: int = 16000,
    min_seconds: float = 0.5,
    max_seconds: float = 2.0,
    seed: int = 0,
    layout: str = "toolkit",
    name: str = "manifest.jsonl",
    relative: bool = True,
    speakers: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``n`` tiny audio files under ``tmp_path/audio`` and a valid manifest; return its path.

    Args:
        layout: ``"toolkit"`` (``audio`` key) or ``"real"`` (``path`` key, like the shared real data).
        relative: audio paths relative to the manifest (True) or absolute.
        speakers: speaker labels cycle over ``spk0 .. spk{speakers-1}``; gender alternates with them.
        extra: extra keys added to every line (e.g. ``{"emotion": "neutral"}``).

    Lines have ``id`` (``utt000``...), audio, ``duration`` (exact), ``text`` (1-4 words from
    :data:`VOCAB`), ``language`` "en", ``speaker``, ``gender``. Even items are tones, odd are noise.
    """
    tmp_path = Path(tmp_path)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        seconds = round(float(rng.uniform(min_seconds, max_seconds)), 3)
        rel = f"audio/utt{i:03d}.wav"
        make_sine_or_noise_wav(tmp_path / rel, seconds, sr=sr, kind="sine" if i % 2 == 0 else "noise",
                               freq=float(200 + 50 * i), seed=seed + i)
        words = [VOCAB[j] for j in rng.integers(len(VOCAB), size=int(rng.integers(1, 5)))]
        spk = i % max(1, speakers)
        rec: dict[str, Any] = {
            "id": f"utt{i:03d}",
            ("audio" if layout == "toolkit" else "path"): rel if relative else str((tmp_path / rel).resolve()),
            "duration": round(int(round(seconds * sr)) / sr, 6),
            "text": " ".join(words),
            "language": "en",
            "speaker": f"spk{spk}",
            "gender": "female" if spk % 2 else "male",
        }
        if layout == "real":
            rec["sr"] = sr
        rec.update(extra or {})
        records.append(rec)
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_corrupt_file(path: str | Path, kind: str = "garbage") -> Path:
    """Write a file that has an audio suffix but cannot be read as audio.

    ``kind="garbage"``: random bytes; ``"truncated"``: a WAV cut off inside its header; ``"empty"``:
    zero bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt ")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"kind must be 'garbage', 'truncated' or 'empty', got {kind!r}")
    return path


# Bad-line kinds: kind -> (the line to insert, the field an error message must name).
_BAD_LINES: dict[str, tuple[str, str]] = {
    "malformed_json": ('{"id": "bad", "audio": "audio/utt000.wav", "text": "oops"', "JSON"),
    "missing_id": ('{"audio": "audio/utt000.wav", "duration": 1.0, "text": "no id"}', "id"),
    "missing_audio": ('{"id": "bad", "duration": 1.0, "text": "no audio"}', "audio"),
    "duplicate_id": ('{"id": "utt000", "audio": "audio/utt000.wav", "text": "again"}', "id"),
    "negative_duration": ('{"id": "bad", "audio": "audio/utt000.wav", "duration": -1.5, "text": "x"}', "duration"),
    "negative_start": ('{"id": "bad", "audio": "audio/utt000.wav", "start": -0.5, "text": "x"}', "start"),
    "string_duration": ('{"id": "bad", "audio": "audio/utt000.wav", "duration": "long", "text": "x"}', "duration"),
    "not_object": ('["utt", "audio/utt000.wav"]', "object"),
}
BAD_LINE_KINDS = tuple(_BAD_LINES)
"""Kinds :func:`make_bad_line_manifest` can write."""


def make_bad_line_manifest(tmp_path: str | Path, kind: str, n: int = 4, at: int = 3) -> tuple[Path, int, str]:
    """A valid manifest of ``n`` lines with one bad line of ``kind`` inserted as line ``at`` (1-based).

    Returns ``(manifest path, bad line number, field name the error must mention)``; see
    :data:`BAD_LINE_KINDS`.
    """
    if kind not in _BAD_LINES:
        raise ValueError(f"unknown bad-line kind {kind!r}; choose from {BAD_LINE_KINDS}")
    path = make_manifest(tmp_path, n=n, name=f"bad_{kind}.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    bad, field = _BAD_LINES[kind]
    lines.insert(at - 1, bad)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, at, field

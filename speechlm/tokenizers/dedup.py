"""Run-length deduplication of unit sequences, with the durations that undo it.

Dimension legend:
    F  frames (50/s)     U  deduplicated units (runs)

SpeechGPT's ``Speech2Unit.merge_duplicates`` (0nutation/SpeechGPT: speechgpt/utils/speech2unit/speech2unit.py)
collapses each run of one unit into a single unit and throws the run lengths away; here they are kept, so
``expand(*dedup(frames))`` gives the frames back exactly and a unit vocoder can be trained on true durations.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dedup", "expand"]


def dedup(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level units [F] -> (run values [U], run lengths [U]), both int64; an empty input gives two empty arrays."""
    u = np.asarray(units).reshape(-1)
    if u.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(u[1:] != u[:-1]) + 1])  # [U] first frame of each run
    durations = np.diff(np.concatenate([starts, [u.size]]))  # [U]
    return u[starts].astype(np.int64), durations.astype(np.int64)


def expand(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """(units [U], durations [U]) -> frame-level units [F = sum(durations)], int64. The inverse of :func:`dedup`."""
    u = np.asarray(units).reshape(-1)
    d = np.asarray(durations).reshape(-1)
    if u.shape != d.shape:
        raise ValueError(f"expand: {u.size} units but {d.size} durations")
    if d.size and int(d.min()) < 1:
        raise ValueError(f"expand: durations must be >= 1, got {int(d.min())} at run {int(d.argmin())}")
    return np.repeat(u.astype(np.int64), d.astype(np.int64))


def unit_runs(tokenizer, seq) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated semantic units and their durations [U] of a tokenizer's output, whatever its layout (a
    codec_ssl tokenizer keeps frame-level units in stream 0; a unit vocoder always reads runs)."""
    return dedup(tokenizer.frames(seq))

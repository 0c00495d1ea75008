"""Long audio and silence: find speech with a VAD, split at pauses into pieces the model accepts, stitch answers.

The encoder covers ``model.max_audio_seconds`` (30 s for Whisper's positional table); a longer file is cut at
the pauses between speech regions into pieces no longer than that, each piece is answered on its own, and the
texts are joined with segment timestamps (seconds in the original file) for verbose_json / SRT / WebVTT.
Audio in which the VAD finds no speech gets an empty transcript instead of whatever the model hallucinates.

VADs: silero-vad's ONNX model, shipped inside its PyPI wheel (no download; ONNX is protobuf, not a pickle),
run with onnxruntime; when either is missing, an energy VAD with a spectral-flatness test (white noise is
spectrally flat, voiced speech is not) takes its place.

May import: utils, config, data, tasks, backbones, model, checkpoint (inference's layer rules).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

SAMPLE_RATE = 16000
Region = tuple[int, int]
"""[start, end) in samples."""


@dataclass(frozen=True)
class Piece:
    """A stretch of the original audio answered on its own: [start, end) in samples."""

    start: int
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


@dataclass(frozen=True)
class Segment:
    """One stitched piece of the answer, with its time span in the original audio (seconds)."""

    id: int
    start: float
    end: float
    text: str


# ---- VADs -----------------------------------------------------------------------------------------------
_SILERO_LOCK = threading.Lock()  # the ONNX wrapper keeps recurrent state between windows: one caller at a time


@functools.lru_cache(maxsize=1)
def _silero_model():
    """silero-vad's ONNX model from its wheel, or None when silero-vad or onnxruntime is not installed."""
    import importlib.util

    # the wrapper imports onnxruntime lazily; find out here, not in the middle of a request
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("silero_vad") is None:
        return None
    import torch

    threads = torch.get_num_threads()
    try:  # silero_vad's model module calls torch.set_num_threads(1) when imported: training would run on one core
        import silero_vad  # its package imports the model and utility modules

        return silero_vad.load_silero_vad(onnx=True)
    finally:
        torch.set_num_threads(threads)


def silero_available() -> bool:
    return _silero_model() is not None


def silero_regions(wave: np.ndarray, threshold: float = 0.5) -> list[Region]:
    """Speech regions by silero-vad (defaults of its get_speech_timestamps: 250-ms speech, 100-ms silence)."""
    import torch
    from silero_vad import get_speech_timestamps

    model = _silero_model()
    if model is None:
        raise RuntimeError("silero-vad with onnxruntime is not installed (pip install silero-vad onnxruntime)")
    with _SILERO_LOCK:
        stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), model,
                                       threshold=threshold, sampling_rate=SAMPLE_RATE)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def energy_regions(wave: np.ndarray, frame_ms: int = 30, floor_db: float = -45.0, above_floor_db: float = 12.0,
                   max_flatness: float = 0.5, min_speech_ms: int = 250, min_silence_ms: int = 300) -> list[Region]:
    """Speech regions by frame energy: a frame is speech when it is louder than ``floor_db`` dBFS and
    ``above_floor_db`` above the file's quietest tenth (or within 3 dB of its loudest frame), and its spectrum is not flat (Wiener entropy below
    ``max_flatness``; white noise is near 1, voiced speech well under 0.3, Johnston 1988). Gaps shorter than
    ``min_silence_ms`` are bridged, regions shorter than ``min_speech_ms`` dropped (silero's own defaults are
    250 ms / 100 ms; a wider gap here because energy is noisier than a trained model)."""
    hop = SAMPLE_RATE * frame_ms // 1000
    n = len(wave) // hop
    if n == 0:
        return []
    frames = np.asarray(wave[: n * hop], dtype=np.float64).reshape(n, hop)
    power = (frames ** 2).mean(axis=1) + 1e-12
    db = 10 * np.log10(power)
    floor = np.percentile(db, 10)
    spec = np.abs(np.fft.rfft(frames * np.hanning(hop), axis=1)) ** 2 + 1e-12
    flatness = np.exp(np.log(spec).mean(axis=1)) / spec.mean(axis=1)
    # relative to the quiet tenth, but never above the loudest frame's level: audio with no pause (one held
    # tone, continuous speech) has no quiet tenth to stand out from
    relative = min(floor + above_floor_db, db.max() - 3.0)
    voiced = (db > floor_db) & (db > relative) & (flatness < max_flatness)
    return _frames_to_regions(voiced, hop, min_speech_ms // frame_ms, min_silence_ms // frame_ms)


def _frames_to_regions(voiced: np.ndarray, hop: int, min_speech: int, min_silence: int) -> list[Region]:
    runs: list[list[int]] = []
    for i, v in enumerate(voiced):
        if not v:
            continue
        if runs and i - runs[-1][1] <= min_silence:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a * hop, b * hop) for a, b in runs if b - a >= max(1, min_speech)]


def speech_regions(wave: np.ndarray, vad: str = "auto") -> list[Region]:
    """Speech regions of a 16-kHz wave by ``vad``: silero, energy, or auto (silero when installed)."""
    if vad not in ("auto", "silero", "energy"):
        raise ValueError(f"unknown VAD {vad!r}: choose auto, silero or energy")
    if vad == "silero" or (vad == "auto" and silero_available()):
        return silero_regions(wave)
    return energy_regions(wave)


def has_speech(wave: np.ndarray, vad: str = "auto") -> bool:
    return len(wave) > 0 and bool(speech_regions(wave, vad))


# ---- splitting and stitching ----------------------------------------------------------------------------
def plan_pieces(n_samples: int, regions: Sequence[Region], max_seconds: float, pad_seconds: float = 0.2) -> list[Piece]:
    """Group consecutive speech regions into pieces of at most ``max_seconds``, cut in the pauses between them.

    Each piece reaches ``pad_seconds`` past its first and last region (never past the middle of the pause to
    a neighbour); a single region longer than the maximum is cut into equal parts.
    """
    limit = int(max_seconds * SAMPLE_RATE)
    pad = int(pad_seconds * SAMPLE_RATE)
    parts: list[Region] = []
    for s, e in regions:  # split over-long regions first
        k = -(-(e - s) // limit)
        step = -(-(e - s) // k)
        parts += [(s + i * step, min(e, s + (i + 1) * step)) for i in range(k)]
    groups: list[list[Region]] = []
    for r in parts:
        if groups and r[1] - groups[-1][0][0] + 2 * pad <= limit:
            groups[-1].append(r)
        else:
            groups.append([r])
    pieces = []
    for i, g in enumerate(groups):
        lo = g[0][0] - pad if i == 0 else max(g[0][0] - pad, (groups[i - 1][-1][1] + g[0][0]) // 2)
        hi = g[-1][1] + pad if i == len(groups) - 1 else min(g[-1][1] + pad, (g[-1][1] + groups[i + 1][0][0]) // 2)
        lo, hi = max(0, lo), min(n_samples, hi)
        if hi - lo > limit:  # the padding alone overflowed: keep the speech, trim the padding
            lo, hi = g[0][0], min(n_samples, g[0][0] + limit)
        pieces.append(Piece(lo, hi))
    return pieces


TRIM_PAD_SECONDS = 0.1
"""With ``trim``, what is kept before the first and after the last speech region (the synthetic corpus keeps the same)."""


def split_long(wave: np.ndarray, max_seconds: float, vad: str = "auto", trim: bool = False,
               regions: Sequence[Region] | None = None) -> list[Piece]:
    """Pieces of ``wave`` no longer than ``max_seconds``: the whole wave when it fits, else cut at pauses.
    Speechless long audio yields no pieces. ``trim``: every piece is cut to its speech +-``TRIM_PAD_SECONDS``, short
    clips too (a model trained on trimmed clips, ``model.trim_silence``); a clip without speech stays whole.
    ``regions``: the wave's speech regions when the caller has them already (the VAD then does not run again)."""
    if trim:
        regions = speech_regions(wave, vad) if regions is None else regions
        if regions:
            return plan_pieces(len(wave), regions, max_seconds, pad_seconds=TRIM_PAD_SECONDS)
    if len(wave) <= max_seconds * SAMPLE_RATE:
        return [Piece(0, len(wave))]
    return plan_pieces(len(wave), speech_regions(wave, vad) if regions is None else regions, max_seconds)


def stitch(pieces: Sequence[Piece], texts: Sequence[str]) -> tuple[str, list[Segment]]:
    """Join the pieces' answers into one text and a segment list (empty answers leave no segment)."""
    segments: list[Segment] = []
    for p, t in zip(pieces, texts):
        if t.strip():
            segments.append(Segment(len(segments), round(p.start_s, 3), round(p.end_s, 3), t.strip()))
    return " ".join(s.text for s in segments), segments


def answer_long(waves: Sequence[np.ndarray], answer: Callable[[list[np.ndarray]], list[str]], max_seconds: float,
                vad: str = "auto", skip_silence: bool = False, trim: bool = False) -> list[tuple[str, list[Segment]]]:
    """Answer each wave through ``answer`` (a batch call), splitting long ones at pauses and stitching.

    ``skip_silence``: a wave in which the VAD finds no speech gets "" without reaching the model.
    ``trim``: leading and trailing silence is cut off every piece (:func:`split_long`).
    All pieces of all waves go through ``answer`` in one call, so its batching still applies.
    """
    plans: list[list[Piece]] = []
    for w in waves:
        regions = speech_regions(w, vad) if (skip_silence or trim) and len(w) else None  # the VAD runs once a wave
        if skip_silence and not regions:
            plans.append([])
        else:
            plans.append(split_long(w, max_seconds, vad, trim, regions))
    flat = [w[p.start:p.end] for w, plan in zip(waves, plans) for p in plan]
    texts = answer(flat) if flat else []
    out, k = [], 0
    for plan in plans:
        out.append(stitch(plan, texts[k:k + len(plan)]))
        k += len(plan)
    return out


def trim_to_speech(cuts: Sequence, vad: str = "auto", pad_seconds: float = TRIM_PAD_SECONDS) -> list:
    """Manifest cuts narrowed to their speech +-``pad_seconds`` (``start``/``duration`` change; no audio is written).
    A cut without detected speech is kept whole. What ``model.trim_silence`` trains on."""
    import dataclasses

    from speechlm.data.audio import load_audio

    out = []
    for c in cuts:
        wave = load_audio(c.audio, start=c.start, duration=c.duration)
        regions = speech_regions(wave, vad)
        if not regions:
            out.append(c)
            continue
        lo = max(0.0, regions[0][0] / SAMPLE_RATE - pad_seconds)
        hi = min(len(wave) / SAMPLE_RATE, regions[-1][1] / SAMPLE_RATE + pad_seconds)
        out.append(dataclasses.replace(c, start=round(c.start + lo, 4), duration=round(hi - lo, 4)))
    return out


# ---- subtitle formats -----------------------------------------------------------------------------------
def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    return "".join(f"{i + 1}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n\n" for i, s in enumerate(segments))


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT (W3C): a header, then cues with ``HH:MM:SS.mmm`` times."""
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n\n" for s in segments)

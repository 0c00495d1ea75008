"""Pseudo-labels: transcripts written by Whisper tiny.en's own decoder for speech clips that have none.

What this module owns: :func:`pseudo_label_manifest`, which reads a manifest (toolkit schema or the
shared real-data layout with ``path``), picks the clips without a ``text`` (by default English ones:
``language == "en"``, so infant cries and sound events are left alone), transcribes them with
:func:`speechlm.backbones.whisper.whisper_transcribe` (greedy, English, no timestamps, 30-s padded
input) and writes a toolkit manifest of the labelled clips, each with ``text`` and
``"text_source": "pseudo:whisper-tiny.en"``. Everything else on the line is kept, and ``asr`` is
added to a ``tasks`` list. Digits in Whisper's output are spelled out by default, like the synthetic
transcripts (the raw output stays in ``pseudo_raw``).

The labels carry Whisper's errors (tiny.en: 9.48% WER on the shared asr_en clips, the project's
baseline quoted in shared/design/alignment.md; MooER trained on 5,000 h of such labels). Results are cached per clip in a JSON file beside
the output (keyed by the model label, decoding settings, audio path, size, start and duration), saved
after every batch, so an interrupted run resumes and a finished one re-runs without loading Whisper.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from speechlm.corpora.text_sources import spell_numbers
from speechlm.data.audio import load_audio
from speechlm.data.manifest import Cut, iter_manifest, write_manifest
from speechlm.utils import write_json

if TYPE_CHECKING:
    from speechlm.backbones.whisper import WhisperBundle

__all__ = ["DEFAULT_LABEL", "pseudo_label_manifest"]

logger = logging.getLogger(__name__)

DEFAULT_LABEL = "whisper-tiny.en"
"""Model name written into ``text_source`` (``"pseudo:whisper-tiny.en"``) and the cache key."""
_CACHE_FORMAT = 1
_MAX_SECONDS = 30.0  # Whisper reads one 30-s window; longer clips would get a truncated transcript


def _cache_key(cut: Cut, label: str, decoding: str) -> str:
    try:
        size = os.path.getsize(cut.audio)
    except OSError:
        size = -1
    raw = f"{label}|{decoding}|{cut.audio}|{size}|{cut.start}|{cut.duration}"
    return hashlib.sha1(raw.encode()).hexdigest()


def _load_cache(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        logger.warning("pseudo-label cache %s is unreadable (%s): starting afresh", path, e)
        return {}
    if not isinstance(obj, dict) or obj.get("format") != _CACHE_FORMAT or not isinstance(obj.get("texts"), dict):
        logger.warning("pseudo-label cache %s has an unknown layout: starting afresh", path)
        return {}
    return {str(k): str(v) for k, v in obj["texts"].items()}


def pseudo_label_manifest(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: "str | WhisperBundle" = "tiny.en-ct2",
    label: str = DEFAULT_LABEL,
    transcribe: Callable[[Sequence[np.ndarray]], list[str]] | None = None,
    language: str | None = "en",
    id_prefix: str | None = None,
    max_seconds: float = _MAX_SECONDS,
    batch_size: int = 8,
    num_beams: int = 1,
    max_new_tokens: int = 128,
    limit: int | None = None,
    spell_out_numbers: bool = True,
    progress: bool = True,
) -> Path:
    """Transcribe the clips of ``manifest`` that have no ``text`` and write them, labelled, to ``out``.

    Args:
        manifest: input JSONL (``audio`` or ``path`` per line; relative paths are relative to it).
        out: output manifest (absolute audio paths). The cache is ``<out folder>/.<out name>.cache.json``.
        model: what :func:`speechlm.backbones.whisper.load_whisper` loads (default: the packaged
            tiny.en; loaded only if some clip is not cached yet), or a ready ``WhisperBundle``.
        label: model name for ``text_source`` (``"pseudo:<label>"``) and the cache key; change it
            when ``model`` or ``transcribe`` changes.
        transcribe: instead of Whisper, any ``fn(list of 16 kHz float32 arrays) -> list of str``
            (tests pass a stand-in; ``batch_size``/``num_beams``/``max_new_tokens`` are then unused).
        language: only clips whose ``language`` label equals this (None: any clip).
        id_prefix: only clips whose id starts with this (e.g. ``"librispeech/"``).
        max_seconds: longer clips are skipped (Whisper would transcribe only their first 30 s).
        batch_size, num_beams, max_new_tokens: Whisper decoding (greedy by default).
        limit: label at most this many clips (first ones in manifest order).
        spell_out_numbers: Whisper writes digits ("Chapter 17", "500"); rewrite them as words
            (:func:`~speechlm.corpora.text_sources.spell_numbers`) to match the synthetic transcripts.
            Whisper's own output is then kept in ``pseudo_raw``.
        progress: show a tqdm bar over the clips still to transcribe.

    Returns:
        ``out``. Clips whose transcript comes back empty (Whisper hears no speech) are left out, with
        a warning giving their number.

    Raises:
        ManifestError: a malformed manifest line (names the file, line and field).
        AudioError: a selected clip's audio is missing or unreadable (names the file).
        ValueError: bad arguments, or ``transcribe`` returned the wrong number of texts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < max_seconds <= _MAX_SECONDS:
        raise ValueError(f"max_seconds must be in (0, {_MAX_SECONDS:g}], got {max_seconds}")
    out = Path(out)
    selected: list[Cut] = []
    too_long = 0
    for cut in iter_manifest(manifest):
        if cut.text.strip():
            continue
        if language is not None and cut.language != language:
            continue
        if id_prefix is not None and not cut.id.startswith(id_prefix):
            continue
        if cut.duration is not None and cut.duration > max_seconds:
            too_long += 1
            continue
        selected.append(cut)
        if limit is not None and len(selected) >= limit:
            break
    if too_long:
        logger.warning("%s: %d unlabelled clip(s) longer than %g s skipped", manifest, too_long, max_seconds)

    decoding = "custom" if transcribe is not None else f"beams{num_beams}-max{max_new_tokens}"
    cache_path = out.parent / f".{out.name}.cache.json"
    cache = _load_cache(cache_path)
    keys = [_cache_key(c, label, decoding) for c in selected]
    todo = [j for j, k in enumerate(keys) if k not in cache]

    if todo:
        if transcribe is None:
            from speechlm.backbones.whisper import load_whisper, whisper_transcribe

            bundle = load_whisper(model) if isinstance(model, str) else model

            def transcribe(waves: Sequence[np.ndarray]) -> list[str]:
                return whisper_transcribe(bundle, list(waves), batch_size=batch_size, num_beams=num_beams,
                                          max_new_tokens=max_new_tokens)

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"pseudo-labelling ({label})", unit="clip")
        try:
            for b in range(0, len(todo), batch_size):
                idx = todo[b: b + batch_size]
                waves = [load_audio(selected[j].audio, selected[j].start, selected[j].duration) for j in idx]
                texts = transcribe(waves)
                if len(texts) != len(idx):
                    raise ValueError(f"transcribe returned {len(texts)} texts for {len(idx)} clips")
                for j, t in zip(idx, texts):
                    cache[keys[j]] = " ".join(str(t).split())
                # Saved after every batch: an interrupted run keeps what it has done.
                write_json(cache_path, {"format": _CACHE_FORMAT, "texts": cache})
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()

    records: list[dict[str, Any]] = []
    empty = 0
    for cut, key in zip(selected, keys):
        text = cache[key]
        if not text:
            empty += 1
            continue
        d = cut.to_dict()
        d["text"] = " ".join(spell_numbers(text).split()) if spell_out_numbers else text
        if d["text"] != text:
            d["pseudo_raw"] = text
        d["text_source"] = f"pseudo:{label}"
        if isinstance(d.get("tasks"), list) and "asr" not in d["tasks"]:
            d["tasks"] = [*d["tasks"], "asr"]
        records.append(d)
    if empty:
        logger.warning("%s: %d clip(s) got an empty transcript and were left out", manifest, empty)
    write_manifest(out, records)
    logger.info("pseudo-labelled %d clip(s) (%d newly transcribed) -> %s", len(records), len(todo), out)
    return out

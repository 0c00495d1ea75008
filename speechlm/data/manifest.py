"""The toolkit's JSONL manifest: one utterance ("cut") per line.

Schema
------
Each non-blank line is one JSON object::

    {"id": "spk1-0001", "audio": "wavs/spk1-0001.flac", "start": 0.0, "duration": 2.41,
     "text": "turn the lights off", "language": "en", "speaker": "spk1", "gender": "female"}

``id`` (str, required)
    Unique within the manifest.
``audio`` (str, required)
    Path to the audio file, absolute or relative to the folder that holds the manifest.
    ``path`` is accepted instead of ``audio`` so the shared real-data manifest
    (``shared/data/real/manifest.jsonl``) can be read directly.
``start`` (float seconds, optional, default 0)
    Offset of the utterance inside the file (several cuts may share one long recording).
``duration`` (float seconds, optional)
    Length of the utterance. If absent it is read from the file header (file length - start).
``text`` (str, optional)
    The transcript. Optional in the schema because some corpora carry only labels (speaker,
    emotion, ...); :func:`validate` requires it by default because ASR training needs it.
``language``, ``speaker`` and any other key (``gender``, ``emotion``, ``digit``, ...)
    Free-form labels. They are kept in :attr:`Cut.labels`; a nested ``"labels": {...}`` object is
    merged into the same dict, so both flat and nested files read the same.

Errors name the file, the line and the field, e.g.
``train.jsonl:17: field 'text': empty transcript``, so a bad line in a 100k-line manifest can be
found with an editor's go-to-line.

Parsing (:func:`iter_manifest`) rejects what cannot be a cut at all: malformed JSON, a missing
``id`` or ``audio``, duplicate ids, negative or non-numeric times. :func:`validate` then checks what
needs the file system and the training config: the audio exists and is readable, the duration fits
``max_duration``, required fields are non-empty. Checking up front means a corrupt file fails the
run in the first second, not three hours in when the data loader reaches it.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from speechlm.data.audio import AudioError, audio_info
from speechlm.utils import atomic_open

__all__ = [
    "Cut",
    "ManifestError",
    "ValidationReport",
    "iter_manifest",
    "read_manifest",
    "validate",
    "write_manifest",
]

# Keys with a meaning of their own; every other key of a line is a label.
_RESERVED = ("id", "audio", "path", "start", "duration", "text", "labels")
# How far (s) a cut may claim to run past the end of its file before it is an error: manifests
# round durations to milliseconds and codecs pad a few frames.
_END_TOLERANCE = 0.05
# How many problems a raised ManifestError spells out before "... and N more".
_MAX_LISTED = 5


class ManifestError(ValueError):
    """A manifest line or cut is invalid. The message names ``file:line``, the field and why.

    ``problems`` holds every ``(source, reason)`` pair found, for callers that want them all.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = list(problems)


@dataclass
class Cut:
    """One utterance: a time span of an audio file plus its transcript and labels."""

    id: str
    """Unique id within its manifest."""
    audio: str
    """Absolute path of the audio file (relative manifest paths are resolved when reading)."""
    start: float = 0.0
    """Offset of the utterance in the file, seconds."""
    duration: float | None = None
    """Length in seconds. ``None`` only when the manifest omitted it *and* the header was unreadable;
    :func:`validate` reports such cuts."""
    text: str = ""
    """Transcript ("" when the manifest has none)."""
    labels: dict[str, Any] = field(default_factory=dict)
    """Every other field of the line: ``language``, ``speaker``, ``gender``, ``emotion``, ..."""
    source: str = ""
    """``"file:line"`` the cut was read from, for error messages ("" for cuts built in code)."""

    @property
    def speaker(self) -> str | None:
        """Shortcut for ``labels.get("speaker")``."""
        return self.labels.get("speaker")

    @property
    def language(self) -> str | None:
        """Shortcut for ``labels.get("language")``."""
        return self.labels.get("language")

    @property
    def end(self) -> float | None:
        """``start + duration`` in seconds, or None if the duration is unknown."""
        return None if self.duration is None else self.start + self.duration

    def to_dict(self, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
        """The manifest line for this cut (labels flattened to top-level keys).

        With ``relative_to`` (a folder), an audio path inside that folder is written relative to it,
        which keeps a corpus folder relocatable.
        """
        audio = self.audio
        if relative_to is not None:
            try:
                audio = Path(audio).resolve().relative_to(Path(relative_to).resolve()).as_posix()
            except ValueError:
                pass  # outside the folder: keep it absolute
        d: dict[str, Any] = {"id": self.id, "audio": audio}
        if self.start:
            d["start"] = self.start
        if self.duration is not None:
            d["duration"] = round(float(self.duration), 6)
        d["text"] = self.text
        nested = {}
        for k, v in self.labels.items():
            # A label that shares a name with a schema key cannot be flat; keep it nested instead.
            (nested if k in _RESERVED else d)[k] = v
        if nested:
            d["labels"] = nested
        return d


def _field_error(source: str, name: str, reason: str) -> ManifestError:
    return ManifestError(f"{source}: field '{name}': {reason}", [(source, f"field '{name}': {reason}")])


def _number(obj: dict, name: str, source: str) -> float | None:
    if name not in obj or obj[name] is None:
        return None
    v = obj[name]
    # bool is an int subclass; "duration": true is a typo, not one second.
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _field_error(source, name, f"expected a finite number of seconds, got {v!r}")
    if v < 0:
        raise _field_error(source, name, f"negative {name} {v}")
    return float(v)


def _parse_line(obj: Any, source: str, base: Path) -> Cut:
    if not isinstance(obj, dict):
        raise ManifestError(f"{source}: expected a JSON object, got {type(obj).__name__}",
                            [(source, f"expected a JSON object, got {type(obj).__name__}")])
    cid = obj.get("id")
    if cid is None or cid == "":
        raise _field_error(source, "id", "missing")
    if not isinstance(cid, str):
        raise _field_error(source, "id", f"expected a string, got {cid!r}")
    audio_key = "audio" if "audio" in obj else "path"
    audio = obj.get(audio_key)
    if audio is None or audio == "":
        raise _field_error(source, "audio", "missing (give 'audio' or 'path')")
    if not isinstance(audio, str):
        raise _field_error(source, audio_key, f"expected a path string, got {audio!r}")
    start = _number(obj, "start", source) or 0.0
    duration = _number(obj, "duration", source)
    text = obj.get("text")
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise _field_error(source, "text", f"expected a string, got {type(text).__name__}")
    labels = {k: v for k, v in obj.items() if k not in _RESERVED}
    nested = obj.get("labels")
    if nested is not None:
        if not isinstance(nested, dict):
            raise _field_error(source, "labels", f"expected an object, got {type(nested).__name__}")
        labels.update(nested)
    # Relative paths are relative to the manifest's folder, not the working directory, so a
    # manifest works wherever the process is started from.
    p = Path(os.path.expanduser(audio))
    if not p.is_absolute():
        p = base / p
    path = os.path.normpath(str(p))
    if duration is None:
        try:
            sr, frames, _ = audio_info(path)
            duration = max(0.0, frames / sr - start)
        except AudioError:
            duration = None  # left for validate() to report with the file and line
    return Cut(id=cid, audio=path, start=start, duration=duration, text=text, labels=labels, source=source)


def iter_manifest(
    path: str | os.PathLike, errors: list[tuple[str, str]] | None = None
) -> Iterator[Cut]:
    """Yield the cuts of a JSONL manifest lazily, one line at a time.

    Args:
        path: the manifest (toolkit layout with ``audio`` or the real-data layout with ``path``).
        errors: if None (default), the first bad line raises :class:`ManifestError`. If a list, bad
            lines are appended to it as ``(source, reason)`` and skipped, so a caller can read a
            partly broken manifest and count what it lost.

    Raises:
        ManifestError: malformed JSON, missing ``id``/``audio``, duplicate ``id``, negative or
            non-numeric ``start``/``duration`` (only when ``errors`` is None).
        FileNotFoundError: the manifest itself does not exist.
    """
    path = Path(path)
    base = path.resolve().parent
    name = str(path)
    seen: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) carry nothing
            source = f"{name}:{lineno}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{source}: malformed JSON: {e.msg} (column {e.colno})",
                                        [(source, f"malformed JSON: {e.msg} (column {e.colno})")]) from None
                cut = _parse_line(obj, source, base)
                if cut.id in seen:
                    raise _field_error(source, "id", f"duplicate id {cut.id!r} (first seen at {seen[cut.id]})")
                seen[cut.id] = source
            except ManifestError as e:
                if errors is None:
                    raise
                errors.extend(e.problems or [(source, str(e))])
                continue
            yield cut


def read_manifest(path: str | os.PathLike) -> list[Cut]:
    """Read a whole manifest into memory; raises :class:`ManifestError` on the first bad line."""
    return list(iter_manifest(path))


def write_manifest(
    path: str | os.PathLike,
    cuts: Iterable[Cut | dict[str, Any]],
    relative_paths: bool = False,
) -> int:
    """Atomically write cuts (or ready-made dicts) as JSONL; returns the number of lines.

    ``relative_paths=True`` writes audio paths inside the manifest's folder relative to it (a
    relocatable corpus); otherwise Cut paths are written as they are (absolute). Dicts are written
    unchanged apart from a check that they carry ``id`` and ``audio``/``path``.
    """
    path = Path(path)
    base = path.parent if relative_paths else None
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for i, c in enumerate(cuts):
            if isinstance(c, Cut):
                d = c.to_dict(relative_to=base)
            elif isinstance(c, dict):
                if not c.get("id") or not (c.get("audio") or c.get("path")):
                    raise ManifestError(f"record {i} for {path}: needs 'id' and 'audio': {c!r}"[:300])
                d = c
            else:
                raise TypeError(f"write_manifest takes Cut or dict records, got {type(c).__name__}")
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
    return n


@dataclass
class ValidationReport:
    """What :func:`validate` found."""

    good: list[Cut]
    """Cuts that passed every check, in input order."""
    bad: list[tuple[str, str]]
    """``(source, reason)`` for every rejected cut or unparsable line; source is ``file:line``."""
    total: int = 0
    """Cuts (and unparsable lines) examined."""
    reasons: Counter = field(default_factory=Counter)
    """How many rejections per kind of problem (e.g. ``{"audio file not found": 3}``)."""
    hours: float = 0.0
    """Total duration of the good cuts, hours."""
    resampled: int = 0
    """Good cuts whose file rate differs from ``sample_rate`` (they load fine, resampled on the fly)."""

    @property
    def n_good(self) -> int:
        """Number of good cuts."""
        return len(self.good)

    @property
    def n_bad(self) -> int:
        """Number of rejected cuts/lines."""
        return len(self.bad)

    def summary(self) -> str:
        """One line for logs: counts, hours and the most common problems."""
        s = f"{self.n_good}/{self.total} cuts ok ({self.hours:.2f} h)"
        if self.bad:
            s += f", {self.n_bad} skipped: " + ", ".join(f"{k} x{v}" for k, v in self.reasons.most_common(4))
        return s


def _reason_kind(reason: str) -> str:
    """A key for counting problems: the field name, plus the kind of problem for audio files
    ("field 'audio': file not found" vs "... corrupt ..."), without per-cut numbers and paths."""
    parts = reason.split(": ")
    return ": ".join(parts[:2]) if parts[0] == "field 'audio'" else parts[0]


def validate(
    cuts: Iterable[Cut] | str | os.PathLike,
    required_fields: Sequence[str] = ("text",),
    max_duration: float | None = 30.0,
    sample_rate: int = 16000,
    check_audio: bool = True,
    skip_bad: bool = False,
) -> ValidationReport:
    """Check cuts before training so a bad clip fails the run at start-up, with its file:line.

    Args:
        cuts: cuts, or a manifest path (then unparsable lines also count as bad under ``skip_bad``).
        required_fields: fields that must be non-empty: ``"text"``, ``"duration"`` or any label key
            (``"speaker"``, ``"emotion"``, ...). ``"text"`` failing reads "empty transcript".
        max_duration: longest allowed cut, seconds (Whisper encoders see at most 30 s); None: no limit.
        sample_rate: the model's rate; files at other rates are counted in ``resampled``, not rejected.
        check_audio: open every file's header (existence, corruption, cut inside the file). Turn off
            only for speed on manifests already validated.
        skip_bad: False raises :class:`ManifestError` listing the first problems; True drops bad cuts
            and reports them.

    Returns:
        A :class:`ValidationReport`; with ``skip_bad=False`` only when every cut is good.
    """
    bad: list[tuple[str, str]] = []
    if isinstance(cuts, (str, os.PathLike)):
        cuts = iter_manifest(cuts, errors=bad if skip_bad else None)
    good: list[Cut] = []
    total = 0
    resampled = 0
    seconds = 0.0
    # Many cuts can share one long recording; read each header once.
    info_cache: dict[str, tuple[int, int, int] | str] = {}

    def check(c: Cut) -> tuple[str | None, bool]:
        """(reason or None, needs_resample). Audio reasons already name the file."""
        needs_resample = False
        if check_audio:
            if c.audio not in info_cache:
                try:
                    info_cache[c.audio] = audio_info(c.audio)
                except AudioError as e:
                    info_cache[c.audio] = ("file not found" if "not found" in str(e)
                                           else "cannot read audio header (corrupt or unsupported format)")
            info = info_cache[c.audio]
            if isinstance(info, str):
                return f"field 'audio': {info}: {c.audio}", False
            sr, frames, _ = info
            file_len = frames / sr
            if c.start >= file_len and file_len > 0:
                return f"field 'start': {c.start:.3f} s is past the end of the file ({file_len:.3f} s)", False
            if c.duration is not None and c.start + c.duration > file_len + _END_TOLERANCE:
                return (f"field 'duration': cut ends at {c.start + c.duration:.3f} s but the file is "
                        f"{file_len:.3f} s long"), False
            needs_resample = sr != sample_rate
        if c.duration is None:
            return "field 'duration': unknown (not in the manifest and the header is unreadable)", False
        if c.duration <= 0:
            return "field 'duration': zero-length cut", False
        if max_duration is not None and c.duration > max_duration:
            return f"field 'duration': {c.duration:.2f} s exceeds max_duration {max_duration:g} s", False
        for name in required_fields:
            if name == "text":
                value: Any = c.text
            elif name in ("id", "audio", "start", "duration"):
                value = getattr(c, name)
            else:
                value = c.labels.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                return f"field '{name}': " + ("empty transcript" if name == "text" else "missing or empty"), False
        return None, needs_resample

    n_rejected = 0
    for c in cuts:
        total += 1
        reason, needs_resample = check(c)
        if reason is None:
            good.append(c)
            seconds += c.duration or 0.0
            resampled += needs_resample
        else:
            n_rejected += 1
            if not reason.startswith("field 'audio'"):
                reason = f"{reason} (audio {c.audio})"  # so the message alone locates the clip
            bad.append((c.source or f"cut {c.id!r}", reason))
    # Unparsable lines were appended to `bad` by iter_manifest (in line order); count them too.
    total += len(bad) - n_rejected
    report = ValidationReport(
        good=good, bad=bad, total=total,
        reasons=Counter(_reason_kind(r) for _, r in bad),
        hours=seconds / 3600.0, resampled=resampled,
    )
    if bad and not skip_bad:
        lines = [f"  {s}: {r}" for s, r in bad[:_MAX_LISTED]]
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise ManifestError(
            f"{len(bad)} of {total} cuts failed validation (pass skip_bad=True, or --skip-bad on the command line, to skip and count them):\n"
            + "\n".join(lines) + more,
            bad,
        )
    return report

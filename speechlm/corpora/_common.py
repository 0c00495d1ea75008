"""Helpers shared by every corpus recipe: errors, metadata tables, scans, probing, the staged pipeline.

A recipe only does stage 1 (read the corpus's own metadata into :class:`~speechlm.data.manifest.Cut`
objects, one list per split, each cut carrying ``source = "file:line"`` of the metadata it came from)
and hands the result to :func:`finish`, which runs the common stages:

2. probe every distinct audio file's header in parallel (``workers`` threads, a tqdm bar), filling in
   unknown durations and rejecting cuts whose file is missing, unreadable, or shorter than the cut;
3. write ``OUT/<split>.jsonl`` atomically (audio inside ``OUT`` relative, elsewhere absolute) plus
   ``OUT/corpus.json`` (counts and hours per split).

Re-running is safe and cheap: stage 3 always rewrites every manifest atomically (temp file + rename, so
an interrupted run leaves the previous manifest or none, never a torn one), and stage 2 keeps
``OUT/.probe_cache.json`` (header info keyed by path, size and mtime), so a second run only re-reads
the headers of files that changed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from speechlm.data.audio import AudioError, audio_info
from speechlm.data.manifest import Cut, write_manifest
from speechlm.utils import atomic_open, write_json

__all__ = [
    "AUDIO_EXTS",
    "CorpusError",
    "finish",
    "find_dir",
    "gender",
    "log",
    "ordered_map",
    "probe_durations",
    "read_keyed_lines",
    "read_table",
    "scan_audio",
]

logger = logging.getLogger("speechlm.corpora")

AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif")
"""Suffixes a recipe treats as audio when it scans a folder (formats libsndfile reads)."""

# How far (s) a cut given with start/duration may run past the end of its file (manifests round to ms).
_END_TOLERANCE = 0.05
# Rejected cuts spelled out in a warning or error before "... and N more".
_MAX_LISTED = 5
_CACHE_NAME = ".probe_cache.json"


class CorpusError(ValueError):
    """The corpus on disk does not match the recipe's layout; the message names ``file:line`` (or the file)."""


def log(corpus: str, msg: str, progress: bool = True, warning: bool = False) -> None:
    """Stage messages and warnings: printed to stderr when ``progress`` (the CLI's default), else sent
    to the ``speechlm.corpora`` logger (warnings at WARNING level, the rest at INFO)."""
    if progress:
        print(f"[{corpus}] {'warning: ' if warning else ''}{msg}", file=sys.stderr, flush=True)
    else:
        logger.log(logging.WARNING if warning else logging.INFO, "[%s] %s", corpus, msg)


_GENDERS = {"m": "male", "male": "male", "male_masculine": "male", "man": "male",
            "f": "female", "female": "female", "female_feminine": "female", "woman": "female"}


def gender(value: str | None) -> str | None:
    """Normalise a corpus's gender code (``M``/``F``, ``Male``, ``male_masculine``...) to ``male``/``female``;
    other non-empty values are kept lower-cased as they are (``other``, ``non-binary``...); empty -> None."""
    if value is None or not str(value).strip():
        return None
    v = str(value).strip().lower()
    return _GENDERS.get(v, v)


def find_dir(src: Path, test: Callable[[Path], bool], names: Sequence[str] = (), depth: int = 2) -> Path | None:
    """``src`` if ``test(src)``, else the first folder below it (named ``names`` first, then any, at most
    ``depth`` levels down, sorted) that passes; None if none does. Lets SRC be the corpus folder or its parent."""
    if test(src):
        return src
    for n in names:
        for c in sorted(src.glob(n)):
            if c.is_dir() and test(c):
                return c
    level = [src]
    for _ in range(depth):
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        for c in level:
            if test(c):
                return c
    return None


def scan_audio(folder: Path, pattern: str = "**/*") -> list[Path]:
    """Audio files (by :data:`AUDIO_EXTS`) under ``folder`` matching ``pattern``, sorted, hidden files skipped."""
    return sorted(p for p in folder.glob(pattern)
                  if p.suffix.lower() in AUDIO_EXTS and not p.name.startswith(".") and p.is_file())


def read_table(path: Path, delimiter: str | None = None, required: Sequence[str] = (),
               quoting: int = csv.QUOTE_MINIMAL) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)`` for each record of a CSV/TSV with a header line.

    The delimiter defaults to tab for ``.tsv``/``.txt`` and comma otherwise. Raises :class:`CorpusError`
    naming ``file:1`` for a missing required column and ``file:line`` for a row with the wrong number of
    fields. Values are stripped; the header's names are stripped too.
    """
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CorpusError(f"{path}:1: empty file, expected a header line") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise CorpusError(f"{path}:1: missing column(s) {', '.join(map(repr, missing))}; header is {header}")
        for row in reader:
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise CorpusError(f"{path}:{reader.line_num}: expected {len(header)} fields "
                                  f"({delimiter!r}-separated, as in the header), got {len(row)}")
            yield reader.line_num, {h: v.strip() for h, v in zip(header, row)}


def read_keyed_lines(path: Path, allow_empty_value: bool = False) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line, key, rest)`` from a ``KEY VALUE...`` file (LibriSpeech ``*.trans.txt``, Kaldi
    ``text``/``utt2spk``...): the key is the first whitespace-separated token, the value the rest.

    Blank lines are skipped; a line with no value raises :class:`CorpusError` naming ``file:line``
    unless ``allow_empty_value`` (Kaldi ``text`` may hold an empty transcript).
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) < 2 and not allow_empty_value:
                raise CorpusError(f"{path}:{lineno}: expected 'KEY VALUE', got {line[:80]!r}")
            yield lineno, parts[0], parts[1].strip() if len(parts) > 1 else ""


# ---------------------------------------------------------------------------------------- stage 2


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 2, window: int = 0) -> Iterator[Any]:
    """``map(fn, items)`` over ``workers`` threads, results in input order, with at most ``window``
    (default ``8 * workers``) items in flight - unlike ``Executor.map`` it does not read the whole
    input first, so a large dataset's rows (audio bytes included) are never all in memory."""
    window = window or 8 * max(1, workers)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_cache(path: Path | None) -> dict[str, list]:
    if path is None or not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a re-probe


def probe_durations(paths: Iterable[str], workers: int = 2, progress: bool = True,
                    cache: Path | None = None, desc: str = "probing audio") -> dict[str, tuple[int, int, int] | str]:
    """Read the header of every audio file in parallel: ``path -> (sample_rate, frames, channels)``, or
    an error string (``"file not found"``, ``"cannot read audio header ..."``) for files that failed.

    Threads suffice (libsndfile releases the GIL). With ``cache`` (a JSON file), results are reused for
    files whose size and mtime are unchanged, and the cache is rewritten atomically afterwards.
    """
    paths = list(dict.fromkeys(paths))
    cached = _load_cache(cache)
    out: dict[str, tuple[int, int, int] | str] = {}
    todo: list[str] = []
    for p in paths:
        c = cached.get(p)
        if c is not None and len(c) == 5 and c[:2] == _stat_key(p):
            out[p] = (int(c[2]), int(c[3]), int(c[4]))
        else:
            todo.append(p)

    def one(p: str) -> tuple[str, tuple[int, int, int] | str]:
        try:
            return p, audio_info(p)
        except AudioError as e:  # the caller adds the path: keep the reason only
            return p, ("file not found" if "not found" in str(e)
                       else "cannot read audio header (corrupt or unsupported format)")

    if todo:
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress, dynamic_ncols=True) as bar:
            for p, info in ordered_map(one, todo, workers, window=256):
                out[p] = info
                bar.update(1)
    if cache is not None and todo:
        keep = {p: v for p, v in cached.items() if p not in out}
        for p, info in out.items():
            st = _stat_key(p)
            if isinstance(info, tuple) and st is not None:
                keep[p] = st + list(info)
        with atomic_open(cache, "w", encoding="utf-8") as f:
            json.dump(keep, f)
    return out


# ---------------------------------------------------------------------------------------- stages 2+3


def _safe_split_name(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("._") or "all"


def finish(corpus: str, splits: dict[str, list[Cut]], src: Path, out: Path, workers: int = 2,
           progress: bool = True, strict: bool = False,
           rejected: list[tuple[str, str, str]] | None = None) -> dict[str, Path]:
    """Stages 2 and 3 for cuts built by a recipe's stage 1; returns ``{split: manifest path}``.

    Stage 2 probes the audio (see :func:`probe_durations`); a cut whose file is missing or unreadable,
    or that ends past the end of its file, is dropped with a warning naming the metadata ``file:line`` it
    came from and listed in ``OUT/rejected.tsv`` (``strict=True`` raises :class:`CorpusError` instead).
    ``rejected`` holds ``(split, source, reason)`` a recipe already dropped (e.g. undecodable rows), to be
    reported with the rest. Duplicate ids within a split are a metadata error and always raise.
    Stage 3 writes ``OUT/<split>.jsonl`` (rewritten atomically on every run) and ``OUT/corpus.json``.
    """
    n_cuts = sum(len(v) for v in splits.values()) + len(rejected or ())
    if n_cuts == 0:
        raise CorpusError(f"{corpus}: no utterances found under {src} (see `speechlm ls corpora` for the layout)")
    for name, cuts in splits.items():
        seen: dict[str, str] = {}
        for c in cuts:
            if c.id in seen:
                raise CorpusError(f"{c.source or c.audio}: duplicate id {c.id!r} in split {name!r} "
                                  f"(first at {seen[c.id]})")
            seen[c.id] = c.source or c.audio
    out.mkdir(parents=True, exist_ok=True)

    audio = [c.audio for cuts in splits.values() for c in cuts]
    log(corpus, f"stage 2/3: probing {len(set(audio))} audio files with {workers} workers", progress)
    info = probe_durations(audio, workers=workers, progress=progress, cache=out / _CACHE_NAME)

    rejected = list(rejected or [])
    kept: dict[str, list[Cut]] = {}
    for name, cuts in splits.items():
        good = []
        for c in cuts:
            i = info[c.audio]
            reason = None
            if isinstance(i, str):
                reason = f"{i}: {c.audio}"
            else:
                file_len = i[1] / i[0]
                if c.start >= file_len and file_len > 0:
                    reason = f"start {c.start:.3f} s is past the end of {c.audio} ({file_len:.3f} s)"
                elif c.duration is None:
                    c.duration = max(0.0, file_len - c.start)
                elif c.start + c.duration > file_len + _END_TOLERANCE:
                    reason = (f"cut ends at {c.start + c.duration:.3f} s but {c.audio} is {file_len:.3f} s long")
                if reason is None and not c.duration:
                    reason = f"zero-length audio: {c.audio}"
            if reason is None:
                good.append(c)
            else:
                rejected.append((name, c.source or c.id, reason))
        kept[name] = good

    rejected_path = out / "rejected.tsv"
    if rejected:
        listed = "\n".join(f"  {s}: {r}" for _, s, r in rejected[:_MAX_LISTED])
        more = f"\n  ... and {len(rejected) - _MAX_LISTED} more" if len(rejected) > _MAX_LISTED else ""
        msg = f"{corpus}: {len(rejected)} of {n_cuts} utterances have unusable audio:\n{listed}{more}"
        if strict:
            raise CorpusError(msg)
        with atomic_open(rejected_path, "w", encoding="utf-8") as f:
            f.write("split\tsource\treason\n")
            f.writelines(f"{n}\t{s}\t{r}\n" for n, s, r in rejected)
        log(corpus, f"{msg}\n  (skipped; all listed in {rejected_path})", progress, warning=True)
    elif rejected_path.exists():
        rejected_path.unlink()  # left from an earlier run whose problems are now fixed

    log(corpus, f"stage 3/3: writing {len(kept)} manifest(s) to {out}", progress)
    paths: dict[str, Path] = {}
    summary: dict[str, Any] = {}
    for name, cuts in kept.items():
        path = out / f"{_safe_split_name(name)}.jsonl"
        write_manifest(path, cuts, relative_paths=True)
        paths[name] = path
        summary[name] = {"manifest": path.name, "cuts": len(cuts),
                         "hours": round(sum(c.duration or 0.0 for c in cuts) / 3600, 4),
                         "speakers": len({c.speaker for c in cuts if c.speaker})}
    write_json(out / "corpus.json", {"corpus": corpus, "src": str(Path(src).resolve()),
                                     "rejected": len(rejected), "splits": summary})
    return paths

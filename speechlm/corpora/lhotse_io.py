"""Lhotse manifests in and out: import a CutSet (or RecordingSet + SupervisionSet), export a CutSet.

Import layout (SRC is one manifest file or a folder of them; ``.jsonl.gz``, ``.jsonl`` or ``.json``)::

    <prefix>_cuts_<split>.jsonl.gz                     a CutSet (e.g. from ``lhotse cut simple``)
    <prefix>_recordings_<split>.jsonl.gz + <prefix>_supervisions_<split>.jsonl.gz   (a recipe's output)

The kind of each file is read from its content; files are grouped into splits by the name pattern
``[<prefix>_]<cuts|recordings|supervisions>[_<split>]`` (split, else prefix, else ``all``), and a
supervision set is paired with the recording set of the same split.

* A cut whose single supervision spans it becomes one cut (id, start, duration of the cut); a cut
  with several supervisions, or one that covers only part of it, becomes one cut per supervision (id
  and span of the supervision); a cut with none keeps its span and has no text.
* Recordings + supervisions: one cut per supervision; a recording without any is one whole-file cut.
* Labels: ``text``, ``speaker``, ``gender``, ``language`` from the supervision, plus its ``custom``
  dict (and the cut's ``custom``, JSON-able values only) flattened into labels.
* Only single-file ``"file"`` audio sources are supported (a ``url``, ``command``, ``memory`` or
  per-channel-file recording, a ``MixedCut``/``PaddingCut``, or a speed/volume transform raises with
  ``file:line``); a relative source path is taken relative to the manifest's folder if it exists there,
  else to the working directory (Lhotse's own rule). The toolkit's loader averages all channels of a
  file; a cut that selects only some of them keeps the selection as a ``channel`` label.

:func:`export_lhotse` writes the reverse: one ``MonoCut`` (``MultiCut`` for multi-channel files) per
manifest line, with one supervision spanning it carrying text, speaker, gender, language and every
other label in ``custom`` - ``lhotse.load_manifest`` reads it, and importing it back gives the same cuts.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from speechlm.corpora._common import CorpusError, finish, log
from speechlm.data.audio import audio_info
from speechlm.data.manifest import Cut, read_manifest

DOC = "Lhotse manifest(s): *_cuts_<split>.jsonl.gz, or *_recordings_<split> + *_supervisions_<split>.jsonl.gz"

_NAME = re.compile(r"^(?:(?P<prefix>.*?)_)?(?P<kind>cuts|recordings|supervisions)(?:_(?P<split>.+))?$")
_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
_TOL = 1e-3  # s: a supervision "spans" its cut when both ends agree this closely
_LHOTSE_FIELDS = ("speaker", "gender", "language")


def _stem(path: Path) -> str:
    name = path.name
    for suf in _SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _items(path: Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, lhotse object)`` for each item of a manifest; a bad item raises with its line."""
    from lhotse.serialization import deserialize_item

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if path.name.endswith((".json", ".json.gz")):  # a JSON list, not JSON lines
            data = json.load(f)
            rows: Any = ((f"{path}:item {i}", d) for i, d in enumerate(data if isinstance(data, list) else [data], 1))
        else:
            rows = ((f"{path}:{n}", line) for n, line in enumerate(f, 1) if line.strip())
        for source, raw in rows:
            try:
                d = json.loads(raw) if isinstance(raw, str) else raw
                yield source, deserialize_item(d)
            except Exception as e:  # noqa: BLE001 - malformed JSON or an unknown manifest kind
                raise CorpusError(f"{source}: not a Lhotse manifest item: {type(e).__name__}: {e}") from None


def _audio_path(rec: Any, source: str, base: Path) -> str:
    if rec is None:
        raise CorpusError(f"{source}: cut has no recording (feature-only cuts are not supported)")
    if len(rec.sources) != 1:
        raise CorpusError(f"{source}: recording {rec.id!r} has {len(rec.sources)} audio sources (one file per "
                          "channel); only single-file recordings are supported")
    s = rec.sources[0]
    if s.type != "file":
        raise CorpusError(f"{source}: recording {rec.id!r} has a {s.type!r} audio source; only 'file' is supported")
    for t in rec.transforms or []:
        name = t.get("name") if isinstance(t, dict) else type(t).__name__
        if name not in ("Resample",):
            raise CorpusError(f"{source}: recording {rec.id!r} has a {name} transform, which a manifest cannot express")
    p = Path(s.source).expanduser()
    if not p.is_absolute():
        p = base / p if (base / p).exists() else Path.cwd() / p
    return str(p.resolve())


def _jsonable(d: dict | None) -> dict:
    out = {}
    for k, v in (d or {}).items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def _sup_labels(sup: Any) -> dict:
    labels = {k: getattr(sup, k) for k in _LHOTSE_FIELDS if getattr(sup, k) is not None}
    labels.update(_jsonable(sup.custom))
    return labels


def _from_cut(cut: Any, source: str, base: Path) -> list[Cut]:
    from lhotse.cut import MonoCut, MultiCut

    if not isinstance(cut, (MonoCut, MultiCut)):
        raise CorpusError(f"{source}: a {type(cut).__name__} (mixed or padded audio) cannot be expressed as a manifest line")
    audio = _audio_path(cut.recording, source, base)
    custom = _jsonable(cut.custom)
    channels = cut.channel if isinstance(cut.channel, list) else [cut.channel]
    if sorted(channels) != list(range(cut.recording.num_channels)):
        custom["channel"] = cut.channel  # a subset of the file's channels: kept as a label (the loader mixes all)
    sups = cut.supervisions
    if not sups:
        return [Cut(id=cut.id, audio=audio, start=cut.start, duration=cut.duration, labels=custom, source=source)]
    if len(sups) == 1 and abs(sups[0].start) < _TOL and abs(sups[0].end - cut.duration) < _TOL:
        s = sups[0]
        return [Cut(id=cut.id, audio=audio, start=cut.start, duration=cut.duration, text=s.text or "",
                    labels={**custom, **_sup_labels(s)}, source=source)]
    out = []
    for s in sups:
        start = max(0.0, s.start)
        end = min(cut.duration, s.end)
        out.append(Cut(id=s.id, audio=audio, start=cut.start + start, duration=max(0.0, end - start),
                       text=s.text or "", labels={**custom, **_sup_labels(s)}, source=source))
    return out


def _read_group(files: dict[str, Path], base_split: str) -> list[Cut]:
    from lhotse import Recording, SupervisionSegment

    cuts: list[Cut] = []
    if "cuts" in files:
        path = files["cuts"]
        for source, item in _items(path):
            cuts += _from_cut(item, source, path.parent)
        return cuts
    rec_file = files.get("recordings")
    if rec_file is None:
        raise CorpusError(f"lhotse: {files['supervisions']}: supervisions for split {base_split!r} without a "
                          "matching recordings manifest (name them <prefix>_recordings_<split>.jsonl.gz)")
    recs: dict[str, tuple[str, str, Any]] = {}
    for source, rec in _items(rec_file):
        if not isinstance(rec, Recording):
            raise CorpusError(f"{source}: expected a Recording, got {type(rec).__name__}")
        recs[rec.id] = (source, _audio_path(rec, source, rec_file.parent), rec)
    covered = set()
    if "supervisions" in files:
        for source, s in _items(files["supervisions"]):
            if not isinstance(s, SupervisionSegment):
                raise CorpusError(f"{source}: expected a SupervisionSegment, got {type(s).__name__}")
            if s.recording_id not in recs:
                raise CorpusError(f"{source}: recording {s.recording_id!r} is not in {rec_file}")
            covered.add(s.recording_id)
            cuts.append(Cut(id=s.id, audio=recs[s.recording_id][1], start=s.start, duration=s.duration,
                            text=s.text or "", labels=_sup_labels(s), source=source))
    for rid, (source, audio, rec) in recs.items():
        if rid not in covered:
            cuts.append(Cut(id=rid, audio=audio, duration=rec.duration, source=source))
    return cuts


def _kind(path: Path) -> str:
    from lhotse import Recording, SupervisionSegment

    for source, item in _items(path):
        return "recordings" if isinstance(item, Recording) else "supervisions" if isinstance(item, SupervisionSegment) else "cuts"
    raise CorpusError(f"{path}: empty manifest")


def prepare_lhotse(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/<split>.jsonl`` for each cut set / recording+supervision pair in SRC."""
    src, out = Path(src), Path(out)
    log("lhotse", f"stage 1/3: reading Lhotse manifests {src}", progress)
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.name.endswith(_SUFFIXES) and p.is_file())
    if not files:
        raise CorpusError(f"lhotse: no .jsonl.gz/.jsonl/.json manifests in {src}; expected {DOC}")
    groups: dict[str, dict[str, Path]] = {}
    for f in files:
        m = _NAME.match(_stem(f))
        key = (m["split"] or m["prefix"] or "all") if m else _stem(f)
        kind = _kind(f)
        if kind in groups.setdefault(key, {}):
            raise CorpusError(f"lhotse: two {kind} manifests for split {key!r}: {groups[key][kind]} and {f}")
        groups[key][kind] = f
    splits = {key: _read_group(g, key) for key, g in groups.items()}
    return finish("lhotse", splits, src, out, workers, progress, strict)


def export_lhotse(manifest: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the cuts of a toolkit manifest as a Lhotse CutSet (``.jsonl.gz``); returns its path.

    ``out`` is the file (``.jsonl.gz``/``.jsonl``) or a folder (then ``<manifest stem>_cuts.jsonl.gz`` in
    it). Recordings are built from the file headers (one per distinct audio file, shared by its cuts).
    Written atomically.
    """
    from lhotse import AudioSource, CutSet, Recording, SupervisionSegment
    from lhotse.cut import MonoCut, MultiCut

    manifest, out = Path(manifest), Path(out)
    if not out.name.endswith((".jsonl.gz", ".jsonl")):
        out = out / f"{manifest.stem}_cuts.jsonl.gz"
    recordings: dict[str, Recording] = {}
    ids: set[str] = set()
    lhotse_cuts = []
    for c in read_manifest(manifest):
        rec = recordings.get(c.audio)
        if rec is None:
            sr, frames, ch = audio_info(c.audio)
            rid = base = Path(c.audio).stem
            n = 1
            while rid in ids:
                n += 1
                rid = f"{base}-{n}"
            ids.add(rid)
            rec = recordings[c.audio] = Recording(
                id=rid, sources=[AudioSource(type="file", channels=list(range(ch)), source=c.audio)],
                sampling_rate=sr, num_samples=frames, duration=frames / sr)
        duration = c.duration if c.duration is not None else rec.duration - c.start
        channel: Any = 0 if rec.num_channels == 1 else list(range(rec.num_channels))
        fields = {k: c.labels[k] for k in _LHOTSE_FIELDS if isinstance(c.labels.get(k), str)}
        custom = {k: v for k, v in c.labels.items() if k not in fields}
        sup = SupervisionSegment(id=c.id, recording_id=rec.id, start=0.0, duration=duration, channel=channel,
                                 text=c.text or None, custom=custom or None, **fields)
        cls = MonoCut if channel == 0 else MultiCut
        lhotse_cuts.append(cls(id=c.id, start=c.start, duration=duration, channel=channel, recording=rec, supervisions=[sup]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")  # keeps the suffix Lhotse picks gzip by
    try:
        CutSet.from_cuts(lhotse_cuts).to_file(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out

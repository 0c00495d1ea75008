"""Writing webdataset-style tar shards (the format is described in speechlm.data.shards)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import soundfile as sf

from speechlm.data.audio import AudioError, load_audio
from speechlm.data.manifest import Cut, ManifestError, iter_manifest
from speechlm.utils import atomic_open


FORMAT = "speechlm-shards"
VERSION = 1
INDEX_NAME = "index.json"
_STATE_FORMAT = "speechlm-shards-state"
_SHARD_NAME = re.compile(r"^shard-\d{6}\.tar$")
# Leftovers of an interrupted write: atomic_open names its temporary files ".{name}.XXXX.tmp".
_TEMP_NAME = re.compile(r"^\.(shard-\d{6}\.tar|index\.json)\..*\.tmp$")
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_TAR_BLOCK = 512
_TAR_RECORD = 10240


class ShardError(RuntimeError):
    """A shard or index is missing, corrupt, or disagrees with the other (re-run write_shards)."""


# ===================================================================================================
# writing
# ===================================================================================================
@dataclass
class _Encoded:
    """One cut ready for the tar: its JSON record and FLAC bytes."""

    cut_id: str
    json: bytes
    flac: bytes
    duration: float  # seconds of audio stored (num_samples / sample_rate)


@dataclass
class _Failed:
    cut: Cut
    reason: str


def _encode_cut(cut: Cut, sample_rate: int) -> _Encoded:
    """Load the cut's span, resample to ``sample_rate`` mono and encode FLAC 16-bit (thread-safe)."""
    try:
        wave = load_audio(cut.audio, start=cut.start, duration=cut.duration, sample_rate=sample_rate)  # [T] f32
    except AudioError as e:
        raise AudioError(f"{cut.source or cut.id}: {e}") from e
    if wave.size == 0:
        raise AudioError(f"{cut.source or cut.id}: empty audio span (start {cut.start} s, duration {cut.duration} s)")
    buf = io.BytesIO()
    # Clip like write_audio: resampling overshoot must not wrap around in 16-bit.
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    duration = round(wave.size / sample_rate, 6)
    record = {"id": cut.id, "duration": duration, "text": cut.text, "labels": cut.labels,
              "sample_rate": sample_rate, "num_samples": int(wave.size)}
    try:
        meta = json.dumps(record, ensure_ascii=False).encode("utf-8")
    except TypeError as e:
        raise ManifestError(f"{cut.source or cut.id}: labels are not JSON-serialisable: {e}") from e
    return _Encoded(cut.id, meta, buf.getvalue(), duration)


def _ordered_map(fn: Callable[[Cut], Any], cuts: Iterable[Cut], workers: int) -> Iterator[tuple[Cut, Any]]:
    """``(cut, fn(cut))`` in input order, ``workers`` threads, at most ``4 * workers`` cuts in flight.

    Threads suffice: libsndfile (via cffi) and soxr release the GIL while decoding/encoding.
    """
    if workers <= 1:
        for c in cuts:
            yield c, fn(c)
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        queue: deque = deque()
        for c in cuts:
            queue.append((c, ex.submit(fn, c)))
            if len(queue) >= 4 * workers:
                c0, fut = queue.popleft()
                yield c0, fut.result()
        while queue:
            c0, fut = queue.popleft()
            yield c0, fut.result()


def _member_bytes(name: str, size: int) -> int:
    """Bytes a tar member takes: header (plus a PAX header for long names) and data padded to 512."""
    header = _TAR_BLOCK if len(name) <= 100 else 3 * _TAR_BLOCK
    return header + -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _make_key(cut_id: str, used: set[str]) -> str:
    key = _KEY_BAD_CHARS.sub("_", cut_id)
    if key in used:
        n = 1
        while f"{key}_{n}" in used:
            n += 1
        key = f"{key}_{n}"
    used.add(key)
    return key


class _TarShardWriter:
    """One shard being written: a tar streamed into an atomic temporary file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cm = atomic_open(path, "wb")
        self._f = self._cm.__enter__()
        self._tar = tarfile.open(fileobj=self._f, mode="w", format=tarfile.PAX_FORMAT)
        self.ids: list[str] = []
        self.durations: list[float] = []
        self.estimated_bytes = 2 * _TAR_BLOCK  # end-of-archive blocks

    def add(self, key: str, enc: _Encoded) -> None:
        for ext, data in (("flac", enc.flac), ("json", enc.json)):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # fixed: the same input gives byte-identical shards
            self._tar.addfile(info, io.BytesIO(data))
        self.ids.append(enc.cut_id)
        self.durations.append(enc.duration)
        self.estimated_bytes += _member_bytes(f"{key}.flac", len(enc.flac)) + _member_bytes(f"{key}.json", len(enc.json))

    def close(self) -> dict[str, Any]:
        self._tar.close()
        self._cm.__exit__(None, None, None)  # fsync + rename into place
        return {"path": self.path.name, "num_cuts": len(self.ids), "seconds": round(sum(self.durations), 6),
                "bytes": self.path.stat().st_size, "ids": self.ids, "durations": self.durations}

    def abort(self, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            self._tar.close()
        with contextlib.suppress(BaseException):
            self._cm.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary file


def _index_complete(index_path: Path, fingerprint: str) -> bool:
    """True if ``index_path`` was written for this fingerprint and all its shards are intact."""
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if data.get("format") != FORMAT or data.get("version") != VERSION or data.get("fingerprint") != fingerprint:
        return False
    for sh in data.get("shards", []):
        p = index_path.parent / sh["path"]
        if not p.is_file() or p.stat().st_size != sh["bytes"]:
            return False
    return True


def _dump_index(index: dict[str, Any]) -> str:
    """index.json text: header keys indented, one line per shard (readable, yet compact for big corpora)."""
    head = {k: v for k, v in index.items() if k != "shards"}
    text = json.dumps(head, indent=1, ensure_ascii=False)
    shards = ",\n".join("  " + json.dumps(sh, ensure_ascii=False) for sh in index["shards"])
    return text[:-2] + ',\n "shards": [\n' + shards + "\n ]\n}\n"


def write_shards(
    manifest: str | os.PathLike | Iterable[Cut],
    out_dir: str | os.PathLike,
    max_cuts_per_shard: int = 1000,
    max_bytes: int = 256 << 20,
    workers: int = 2,
    progress: bool = True,
    sample_rate: int = 16000,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``manifest`` as tar shards plus ``index.json`` under ``out_dir``; return the index path.

    Args:
        manifest: a JSONL manifest path, or Cut objects (materialised into a list).
        out_dir: output folder (created). Files other than ``shard-NNNNNN.tar`` / ``index.json`` and
            their temporary names are never touched.
        max_cuts_per_shard: at most this many cuts per shard.
        max_bytes: a shard is closed before a cut that would make it larger than this (tar overhead
            included); a single larger cut still gets a shard of its own.
        workers: threads decoding/resampling/encoding audio (order of the output is unaffected).
        progress: show a tqdm bar.
        sample_rate: rate of the stored audio (the model's rate).
        skip_bad: skip cuts whose audio cannot be read (listed in the index under ``skipped``) instead
            of raising :class:`AudioError`.
        overwrite: rewrite even if an index for the same manifest and settings is already complete.

    The manifest is parsed completely before any audio is read, so a bad line fails in the first
    second. Re-running with the same input and settings returns at once; with different ones the
    shards are rewritten and stale ``shard-*.tar`` files removed. Changes inside audio files are not
    detected (pass ``overwrite=True``). Do not run two writers on one folder at the same time.
    """
    if max_cuts_per_shard < 1:
        raise ValueError(f"max_cuts_per_shard must be >= 1, got {max_cuts_per_shard}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    out_dir = Path(out_dir)
    if isinstance(manifest, (str, os.PathLike)):
        mpath = Path(manifest)

        def cuts() -> Iterator[Cut]:
            return iter_manifest(mpath)
    else:
        cut_list = list(manifest)
        for c in cut_list:
            if not isinstance(c, Cut):
                raise TypeError(f"write_shards takes a manifest path or Cut objects, got {type(c).__name__}")

        def cuts() -> Iterator[Cut]:
            return iter(cut_list)

    # Pass 1: parse and fingerprint (manifest records + settings); no audio is touched.
    settings = {"version": VERSION, "sample_rate": sample_rate, "max_cuts_per_shard": max_cuts_per_shard,
                "max_bytes": max_bytes, "skip_bad": skip_bad}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    seen: set[str] = set()
    for c in cuts():
        if c.id in seen:
            raise ManifestError(f"{c.source or c.id}: duplicate id {c.id!r}")
        seen.add(c.id)
        h.update(json.dumps(c.to_dict(), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
    if not seen:
        raise ManifestError(f"{manifest if isinstance(manifest, (str, os.PathLike)) else 'cuts'}: no cuts to shard")
    fingerprint = h.hexdigest()
    index_path = out_dir / INDEX_NAME
    if not overwrite and _index_complete(index_path, fingerprint):
        return index_path

    out_dir.mkdir(parents=True, exist_ok=True)
    index_path.unlink(missing_ok=True)  # from here on the folder has no valid index until we finish
    for p in out_dir.iterdir():
        if _TEMP_NAME.match(p.name):
            p.unlink(missing_ok=True)

    def encode(c: Cut) -> _Encoded | _Failed:
        try:
            return _encode_cut(c, sample_rate)
        except AudioError as e:
            if skip_bad:
                return _Failed(c, str(e))
            raise

    from tqdm import tqdm

    shards: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    used_keys: set[str] = set()
    cur: _TarShardWriter | None = None
    bar = tqdm(total=len(seen), desc="shards", unit="cut", disable=not progress, dynamic_ncols=True)
    try:
        for c, enc in _ordered_map(encode, cuts(), workers):
            bar.update(1)
            if isinstance(enc, _Failed):
                skipped.append({"id": c.id, "source": c.source, "reason": enc.reason})
                continue
            key = _make_key(c.id, used_keys)
            size = _member_bytes(f"{key}.flac", len(enc.flac)) + _member_bytes(f"{key}.json", len(enc.json))
            if cur is not None and (len(cur.ids) >= max_cuts_per_shard
                                    or -(-(cur.estimated_bytes + size) // _TAR_RECORD) * _TAR_RECORD > max_bytes):
                shards.append(cur.close())
                cur = None
            if cur is None:
                cur = _TarShardWriter(out_dir / f"shard-{len(shards):06d}.tar")
            cur.add(key, enc)
        if cur is not None:
            shards.append(cur.close())
            cur = None
    except BaseException as e:
        if cur is not None:
            cur.abort(e)
        raise
    finally:
        bar.close()
    if not shards:
        raise AudioError(f"no cut could be read ({len(skipped)} skipped, e.g. {skipped[0]['reason']})")

    index = {"format": FORMAT, "version": VERSION, "sample_rate": sample_rate, "audio_format": "flac",
             "num_cuts": sum(s["num_cuts"] for s in shards), "num_shards": len(shards),
             "total_seconds": round(sum(s["seconds"] for s in shards), 6), "fingerprint": fingerprint,
             "max_cuts_per_shard": max_cuts_per_shard, "max_bytes": max_bytes,
             "skipped": skipped, "shards": shards}
    with atomic_open(index_path, "w", encoding="utf-8") as f:
        f.write(_dump_index(index))
    names = {s["path"] for s in shards}
    for p in out_dir.iterdir():
        if _SHARD_NAME.match(p.name) and p.name not in names:
            p.unlink(missing_ok=True)  # left over from an earlier run with more shards
    return index_path


# ===================================================================================================
# the index
# ===================================================================================================

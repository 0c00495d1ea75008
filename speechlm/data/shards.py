"""Sharded corpora: webdataset-compatible tar shards, streamed with DDP/worker splits and exact resume.

A manifest of a million clips cannot be read with one random ``open()`` per clip from network storage
without stalling the GPUs. Packing the clips into a few hundred tar files and reading each tar front to
back turns that into large sequential reads. This module writes such shards and streams them back.

Layout
------
:func:`write_shards` turns a manifest into::

    out_dir/
      shard-000000.tar    {key}.flac  the cut's span [start, start + duration) of its source file,
      shard-000001.tar                resampled to 16 kHz mono, FLAC 16-bit
      ...                 {key}.json  {"id", "duration", "text", "labels", "sample_rate", "num_samples"}
      index.json          format/version, sample rate, fingerprint, and per shard: path, num_cuts,
                          seconds, bytes, ids and durations (in member order)

Cuts keep manifest order; a shard is closed when it holds ``max_cuts_per_shard`` cuts or adding the
next cut would pass ``max_bytes``. ``{key}`` is the cut id with every character outside
``[A-Za-z0-9_-]`` replaced by ``_`` (webdataset splits a member name at its first dot), made unique
with a ``_N`` suffix if needed; the real id is in the JSON. Both members of a cut are adjacent, so
``webdataset.WebDataset("out/shard-{000000..000041}.tar")`` reads the shards as they are (samples with
``__key__``, ``flac`` and ``json``). ``duration`` in the JSON and the index is the length of the audio
actually stored (``num_samples / sample_rate``). Shards and the index are written atomically
(temporary name, then rename); the old index is removed first and the new one written last, so an
``index.json`` always describes complete shards. Re-running with the same manifest and settings is a
no-op (the index stores a fingerprint of both); otherwise the shards are rewritten and shards the new
index does not name are deleted.

Split rule (DDP ranks x DataLoader workers)
-------------------------------------------
Every (rank, worker) pair is a *slot*: ``slot = rank * num_workers + worker_id``, ``S = world_size *
num_workers`` slots in all. Each epoch the shard order is a permutation drawn from ``(seed, epoch)``
(identity when ``shuffle=False``), the same on every process. Then:

* ``num_shards >= S``: whole shards are dealt round-robin, slot ``s`` reads shards
  ``order[s::S]`` (each tar is opened by exactly one slot);
* ``num_shards < S``: every slot reads every shard, numbering the items in that global read order
  ``c = 0, 1, 2, ...`` and keeping those with ``c % S == s`` (it skips the other items' bytes without
  decoding them).

Either way each item belongs to exactly one slot: no duplicates, no losses. With whole shards the
slots can differ by up to one shard's worth of items, so write many more shards than slots (e.g.
>= 8 per slot). A slot's items then pass through a shuffle buffer of ``shuffle_buffer`` items (and,
with batching, into duration-sorted pools of ``bucket_size`` items packed into batches).

Determinism and resume
----------------------
The shuffle buffer is simulated on item *indices* from the index alone (it needs only the item
counts and durations), so the complete emission order of a slot, and its batches, is a function of
``(index, seed, epoch, slot, S)``. The reader then streams the slot's tars sequentially, keeping the
raw bytes of items read but not yet due (at most about ``shuffle_buffer + bucket_size`` items) and
emitting units (items or batches) in the planned order. The resume state of a slot is therefore just
one number, the units it has already delivered: restarting from ``start = n`` skips (without decoding,
and without opening fully consumed shards) every item of the first ``n`` units and yields exactly the
remaining ones in the same order. :class:`ShardDataset` keeps one such count per slot plus, per rank,
which DataLoader worker is due next, so that even the interleaving of the workers' batches resumes
exactly (see :meth:`ShardDataset.load_state_dict`).

DDP and uneven ranks
--------------------
Different ranks get different numbers of items and batches (whole shards, duration budgets). Because
the plan needs only the index, every process can compute every rank's batch count up front
(:meth:`ShardDataset.remaining_per_rank`); a training loop runs ``max(...)`` micro-steps per epoch on
every rank and lets a rank whose stream has ended contribute a zero-weighted step, so no collective
blocks and no item is dropped.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

# The format's constants, its error type and the writer live in shard_writer; re-exported here.
from speechlm.data.shard_writer import FORMAT, INDEX_NAME, VERSION, _STATE_FORMAT, ShardError, write_shards  # noqa: F401


__all__ = [
    "ShardBatch",
    "ShardDataset",
    "ShardError",
    "ShardInfo",
    "ShardedCuts",
    "batch_by_duration",
    "iter_shards",
    "merge_states",
    "write_shards",
]


@dataclass(frozen=True)
class ShardInfo:
    """One shard as listed in the index."""

    path: Path
    """Absolute path of the tar."""
    num_cuts: int
    seconds: float
    bytes: int


class ShardedCuts:
    """A sharded corpus: its ``index.json`` loaded (shards, item ids and durations, no audio).

    Items are numbered globally ``0 .. len-1`` in write order (shard by shard, member order).

    Args:
        index: ``index.json`` or the folder holding it.
    """

    def __init__(self, index: str | os.PathLike) -> None:
        p = Path(index)
        if p.is_dir():
            p = p / INDEX_NAME
        if not p.is_file():
            raise ShardError(f"{p}: shard index not found (has write_shards finished?)")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ShardError(f"{p}: corrupt shard index: {e}") from e
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ShardError(f"{p}: not a {FORMAT} v{VERSION} index (format {data.get('format')!r}, "
                             f"version {data.get('version')!r})")
        self.path = p.resolve()
        self.root = self.path.parent
        self.sample_rate: int = int(data["sample_rate"])
        self.fingerprint: str = data["fingerprint"]
        self.skipped: list[dict[str, str]] = data.get("skipped", [])
        """Cuts write_shards left out under ``skip_bad`` (id, source, reason)."""
        self.shards: list[ShardInfo] = []
        self.ids: list[str] = []
        durations: list[float] = []
        for sh in data["shards"]:
            if not len(sh["ids"]) == len(sh["durations"]) == sh["num_cuts"]:
                raise ShardError(f"{p}: shard {sh['path']}: num_cuts, ids and durations disagree")
            self.shards.append(ShardInfo(self.root / sh["path"], int(sh["num_cuts"]), float(sh["seconds"]), int(sh["bytes"])))
            self.ids.extend(sh["ids"])
            durations.extend(sh["durations"])
        self.durations = np.asarray(durations, dtype=np.float64)  # [N] seconds
        counts = np.array([s.num_cuts for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [num_shards + 1]

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ShardedCuts({str(self.path)!r}: {len(self)} cuts, {len(self.shards)} shards, {self.total_seconds / 3600:.2f} h)"

    @property
    def total_seconds(self) -> float:
        """Audio seconds in the corpus."""
        return float(self.durations.sum())

    def iter(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Same as :func:`iter_shards` on this corpus."""
        return iter_shards(self, **kwargs)


def _as_corpus(index: ShardedCuts | str | os.PathLike) -> ShardedCuts:
    return index if isinstance(index, ShardedCuts) else ShardedCuts(index)


# ===================================================================================================
# planning: everything below is a pure function of the index and (seed, epoch, slot, S)
# ===================================================================================================
@dataclass(frozen=True)
class _Batching:
    max_seconds: float  # per-rank budget (audio seconds)
    max_batch: int | None
    bucket_size: int


@dataclass(frozen=True)
class _Plan:
    """What one slot emits in one epoch, as global item indices: unit u is ``flat[bounds[u]:bounds[u+1]]``."""

    shards: np.ndarray  # [k] shard indices in the order the slot reads them
    flat: np.ndarray  # [n] global item indices in emission order
    bounds: np.ndarray  # [U + 1] unit boundaries into flat (units are items or batches)

    @property
    def num_units(self) -> int:
        return len(self.bounds) - 1


def _slot_items(corpus: ShardedCuts, epoch: int, seed: int, shuffle: bool, slot: int,
                num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(shards read, items owned in read order) of ``slot`` under the split rule of the module docstring."""
    n_shards = len(corpus.shards)
    order = np.random.default_rng([seed, epoch]).permutation(n_shards) if shuffle else np.arange(n_shards)
    off = corpus.offsets
    if n_shards >= num_slots:
        mine = order[slot::num_slots]
        parts = [np.arange(off[s], off[s + 1]) for s in mine]
        return mine, (np.concatenate(parts) if parts else np.zeros(0, np.int64))
    everything = np.concatenate([np.arange(off[s], off[s + 1]) for s in order])  # global read order
    return order, everything[slot::num_slots]


def _shuffle_buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a shuffle buffer of ``size`` fed 0..n-1: once full, each new input makes a random
    buffered item leave; the rest drains in random order. Bounded look-ahead: output j is an input < j + size."""
    if size <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    u = rng.random(n)
    out = np.empty(n, dtype=np.int64)
    buf: list[int] = []
    k = 0
    for i in range(n):
        buf.append(i)
        if len(buf) >= size:
            j = int(u[i] * len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            out[k] = buf.pop()
            k += 1
    out[k:] = np.asarray(buf, dtype=np.int64)[rng.permutation(len(buf))]
    return out


def _pack(durations: np.ndarray, order: np.ndarray, max_seconds: float, max_batch: int | None) -> list[np.ndarray]:
    """Greedy packing of ``order`` (sorted by duration) into batches of <= max_seconds and <= max_batch items
    (the same rule as DurationBatchSampler; a single over-long item forms a batch of its own)."""
    batches: list[np.ndarray] = []
    lo, total = 0, 0.0
    cap = max_batch or math.inf
    d = durations[order]
    for i in range(len(order)):
        if i > lo and (total + d[i] > max_seconds + 1e-9 or i - lo >= cap):
            batches.append(order[lo:i])
            lo, total = i, 0.0
        total += d[i]
    if lo < len(order):
        batches.append(order[lo:])
    return batches


def _slot_plan(corpus: ShardedCuts, *, epoch: int, seed: int, shuffle: bool, slot: int, num_slots: int,
               shuffle_buffer: int, batching: _Batching | None) -> _Plan:
    shards, items = _slot_items(corpus, epoch, seed, shuffle, slot, num_slots)
    rng = np.random.default_rng([seed, epoch, slot, num_slots])
    if shuffle:
        items = items[_shuffle_buffer_order(len(items), shuffle_buffer, rng)]
    if batching is None:
        return _Plan(shards, items, np.arange(len(items) + 1, dtype=np.int64))
    batches: list[np.ndarray] = []
    for lo in range(0, len(items), batching.bucket_size):
        pool = items[lo:lo + batching.bucket_size]
        pool = pool[np.argsort(corpus.durations[pool], kind="stable")]  # sort the pool: tight lengths
        packed = _pack(corpus.durations, pool, batching.max_seconds, batching.max_batch)
        if shuffle:  # otherwise every pool would start with its shortest batch
            packed = [packed[j] for j in rng.permutation(len(packed))]
        batches.extend(packed)
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    bounds = np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64)
    return _Plan(shards, flat, bounds)


def _check_slot(rank: int, world_size: int, worker_id: int, num_workers: int) -> tuple[int, int]:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise ValueError(f"need 0 <= worker_id < num_workers, got worker_id={worker_id}, num_workers={num_workers}")
    return rank * num_workers + worker_id, world_size * num_workers


# ===================================================================================================
# reading
# ===================================================================================================
def _iter_tar(path: Path, wanted: np.ndarray) -> Iterator[tuple[int, dict[str, bytes]]]:
    """Stream a tar front to back; yield ``(j, {ext: bytes, "__key__": key})`` for the j-th sample when
    ``wanted[j]``. Samples are runs of consecutive members sharing a key (webdataset's rule); the
    bytes of unwanted samples are skipped, not decoded."""
    n = len(wanted)
    j, key, rec = -1, None, None
    try:
        with tarfile.open(path, mode="r|") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                d, _, base = m.name.rpartition("/")
                stem, _, ext = base.partition(".")
                k = f"{d}/{stem}" if d else stem
                if k != key:
                    if rec is not None:
                        yield j, rec
                    j, key = j + 1, k
                    if j >= n:
                        raise ShardError(f"{path}: more samples than the {n} the index lists (index out of date?)")
                    rec = {"__key__": k} if wanted[j] else None
                if rec is not None:
                    rec[ext] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"{path}: cannot read shard: {e}") from e
    if rec is not None:
        yield j, rec
    if j + 1 != n:
        raise ShardError(f"{path}: {j + 1} samples but the index lists {n} (truncated shard or stale index?)")


def _decode(corpus: ShardedCuts, shard: int, g: int, rec: dict[str, bytes]) -> dict[str, Any]:
    """Raw sample -> item dict with ``wave`` float32 [T] at the corpus rate."""
    where = f"{corpus.shards[shard].path}: sample {rec.get('__key__')!r}"
    try:
        meta = json.loads(rec["json"])
        wave, sr = sf.read(io.BytesIO(rec["flac"]), dtype="float32", always_2d=True)  # [T, C]
    except KeyError as e:
        raise ShardError(f"{where}: no .{e.args[0]} member") from None
    except Exception as e:
        raise ShardError(f"{where}: corrupt member: {e}") from e
    if meta.get("id") != corpus.ids[g]:
        raise ShardError(f"{where}: id {meta.get('id')!r} but the index expects {corpus.ids[g]!r} (stale index?)")
    if sr != corpus.sample_rate:
        raise ShardError(f"{where}: {sr} Hz audio in a {corpus.sample_rate} Hz corpus")
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    return {"id": meta["id"], "wave": np.ascontiguousarray(wave, dtype=np.float32), "text": meta.get("text", ""),
            "labels": meta.get("labels", {}), "duration": float(meta.get("duration", wave.size / sr))}


def _read_units(corpus: ShardedCuts, plan: _Plan, start: int) -> Iterator[tuple[int, list[tuple[int, int, dict]]]]:
    """Yield ``(u, [(shard, g, raw)...])`` for units ``start..U-1`` of ``plan``, reading its shards in
    order and holding raw bytes only of items read but not yet due."""
    n_units = plan.num_units
    if not 0 <= start <= n_units:
        raise ValueError(f"start={start} outside 0..{n_units} (units of this slot's epoch)")
    if start == n_units:
        return
    need = np.zeros(len(corpus), dtype=bool)
    need[plan.flat[plan.bounds[start]:]] = True
    pending: dict[int, tuple[int, dict]] = {}
    u = start
    unit = plan.flat[plan.bounds[u]:plan.bounds[u + 1]].tolist()
    for s in plan.shards.tolist():
        lo, hi = int(corpus.offsets[s]), int(corpus.offsets[s + 1])
        if not need[lo:hi].any():
            continue  # nothing due from this shard (other slot's items or already consumed): not opened
        for j, rec in _iter_tar(corpus.shards[s].path, need[lo:hi]):
            pending[lo + j] = (s, rec)
            while all(g in pending for g in unit):
                due = [(g, pending.pop(g)) for g in unit]
                yield u, [(shard, g, raw) for g, (shard, raw) in due]
                u += 1
                if u == n_units:
                    return
                unit = plan.flat[plan.bounds[u]:plan.bounds[u + 1]].tolist()
    missing = [corpus.ids[g] for g in unit if g not in pending][:3]
    raise ShardError(f"{corpus.path}: stream ended at unit {u} of {n_units}; items {missing} never appeared in their shards")


def iter_shards(
    index: ShardedCuts | str | os.PathLike,
    rank: int = 0,
    world_size: int = 1,
    worker_id: int = 0,
    num_workers: int = 1,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    start: int = 0,
    shuffle_buffer: int = 500,
) -> Iterator[dict[str, Any]]:
    """Stream the items of one slot (``rank``, ``worker_id``) for one epoch.

    Yields dicts ``{"id", "wave": float32 [T] (16 kHz), "text", "labels", "duration" (s), "epoch",
    "slot", "position"}``; ``position`` counts the slot's items from 0, so after consuming an item the
    resume point is ``start = item["position"] + 1``. The streams of all ``world_size * num_workers``
    slots partition the corpus (split rule in the module docstring); the order is a function of
    ``(seed, epoch)``. ``shuffle=False`` keeps shard and item order (no buffer).
    """
    corpus = _as_corpus(index)
    slot, num_slots = _check_slot(rank, world_size, worker_id, num_workers)
    plan = _slot_plan(corpus, epoch=epoch, seed=seed, shuffle=shuffle, slot=slot, num_slots=num_slots,
                      shuffle_buffer=shuffle_buffer, batching=None)
    for u, recs in _read_units(corpus, plan, start):
        (s, g, rec), = recs
        item = _decode(corpus, s, g, rec)
        item.update(epoch=epoch, slot=slot, position=u)
        yield item


def batch_by_duration(
    items: Iterable[dict[str, Any]],
    max_seconds: float,
    max_batch: int | None = None,
    bucket_size: int = 100,
    shuffle: bool = False,
    seed: int = 0,
) -> Iterator[list[dict[str, Any]]]:
    """Group a stream of items (dicts with ``duration`` in seconds) into batches of at most
    ``max_seconds`` audio and ``max_batch`` items.

    Like :class:`~speechlm.data.sampler.DurationBatchSampler`, but over a stream: consecutive pools of
    ``bucket_size`` items are sorted by duration and packed greedily (so lengths inside a batch are
    close); ``shuffle`` permutes the batches of each pool (deterministically from ``seed``). Memory:
    one pool. :class:`ShardDataset` applies the same rule to its plan (with ``max_seconds`` per rank).
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
    rng = np.random.default_rng(seed)
    pool: list[dict[str, Any]] = []

    def flush() -> Iterator[list[dict[str, Any]]]:
        d = np.array([float(it["duration"]) for it in pool])
        order = np.argsort(d, kind="stable")
        packed = _pack(d, order, max_seconds, max_batch)
        if shuffle:
            packed = [packed[j] for j in rng.permutation(len(packed))]
        for b in packed:
            yield [pool[i] for i in b.tolist()]

    for it in items:
        pool.append(it)
        if len(pool) >= bucket_size:
            yield from flush()
            pool = []
    if pool:
        yield from flush()


# ===================================================================================================
# torch
# ===================================================================================================
@dataclass
class ShardBatch:
    """One batch from :class:`ShardDataset` (batch mode): items of one slot, sorted by duration."""

    items: list[Any]
    """The items (after ``transform``)."""
    epoch: int
    slot: int
    unit: int
    """Index of this batch in its slot's epoch plan (what :meth:`ShardDataset.record` stores)."""
    ids: list[str]
    seconds: float
    """Audio seconds in the batch."""
    data: Any = None
    """``collate(items)`` when ShardDataset was given a ``collate`` function (runs in the worker)."""

    def __len__(self) -> int:
        return len(self.items)


def _identity(x: Any) -> Any:
    return x


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine the per-rank :meth:`ShardDataset.state_dict` of every rank into one global state (what
    a rank-0 checkpoint should hold). All states must come from the same epoch and settings."""
    if not states:
        raise ValueError("no states to merge")
    first = states[0]
    settings = {k: v for k, v in first.items() if k not in ("rank", "consumed", "next_worker")}
    consumed: dict[int, int] = {}
    next_worker: dict[int, int] = {}
    for st in states:
        for k, v in settings.items():
            if st.get(k) != v:
                raise ValueError(f"cannot merge shard states: {k}={st.get(k)!r} vs {v!r}")
        consumed.update({int(k): int(v) for k, v in st["consumed"].items()})
        next_worker.update({int(k): int(v) for k, v in st["next_worker"].items()})
    return {**settings, "rank": None, "consumed": consumed, "next_worker": next_worker}


class ShardDataset(IterableDataset):
    """Streams a sharded corpus for one DDP rank, split over that rank's DataLoader workers.

    Each DataLoader worker (``torch.utils.data.get_worker_info()``) serves one slot of the split rule
    (module docstring). Iterated without workers but with ``num_workers > 1``, it interleaves its slots
    exactly as a DataLoader with that many workers would (round-robin, exhausted slots skipped).

    Yields item dicts (``{"id", "wave", "text", "labels", "duration", "epoch", "slot", "position"}``,
    after ``transform``) or, with ``max_seconds``, :class:`ShardBatch` objects. Use it through
    :meth:`loader` (``batch_size=None``, the matching ``num_workers``, no persistent workers).

    Args:
        index: a :class:`ShardedCuts` or the path of ``index.json`` / its folder.
        rank, world_size: DDP rank and number of ranks.
        num_workers: the DataLoader's ``num_workers`` (0: read in the main process).
        seed: shard order, shuffle buffer and batch order derive from ``(seed, epoch)``.
        shuffle: False: shards and items in index order (evaluation).
        shuffle_buffer: items in the (simulated) shuffle buffer; raw bytes of up to about this many
            items (plus ``bucket_size``) are held per worker.
        max_seconds: batch mode: audio seconds per *global* batch, as in DurationBatchSampler; each rank
            packs ``max_seconds / world_size``. None: yield single items.
        max_batch: cap on items per global batch; each rank packs at most ``max(1, max_batch // world_size)``.
        bucket_size: batch mode: items per duration-sorted pool.
        transform: applied to every decoded item in the worker (e.g. prompt/target tokenisation); in
            item mode it must return a dict (``epoch``/``slot``/``position`` are added back).
        collate: batch mode: ``ShardBatch.data = collate(items)``, computed in the worker.
            With a ``spawn``/``forkserver`` DataLoader context, ``transform`` and ``collate`` must be
            picklable (module-level functions or bound methods of picklable objects).

    Resume: call :meth:`record` with every unit (item or batch) the training loop has finished,
    save :meth:`gather_state_dict` (all ranks together) and on restart :meth:`load_state_dict` it
    *before* creating the DataLoader iterator. Call :meth:`set_epoch` at each new epoch.
    """

    def __init__(
        self,
        index: ShardedCuts | str | os.PathLike,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 500,
        max_seconds: float | None = None,
        max_batch: int | None = None,
        bucket_size: int = 100,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        collate: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        super().__init__()
        self.corpus = _as_corpus(index)
        self.num_workers = int(num_workers)
        self._nw = max(1, self.num_workers)
        _check_slot(rank, world_size, 0, self._nw)
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle, self.shuffle_buffer = int(seed), bool(shuffle), int(shuffle_buffer)
        self.max_seconds, self.max_batch, self.bucket_size = max_seconds, max_batch, int(bucket_size)
        self._batching = None if max_seconds is None else _Batching(
            max_seconds / world_size, None if max_batch is None else max(1, max_batch // world_size), self.bucket_size)
        self.transform = transform
        self.collate = collate
        self.epoch = 0
        self._consumed: dict[int, int] = {}  # slot -> units delivered and finished in this epoch
        self._next_worker: dict[int, int] = {}  # rank -> local worker whose unit is due next
        self._plans: dict[tuple[int, int], _Plan] = {}

    # -- layout --------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        """world_size * max(1, num_workers)."""
        return self.world_size * self._nw

    def slots_of(self, rank: int | None = None) -> range:
        """Global slot numbers served by ``rank`` (default: this rank), one per worker."""
        r = self.rank if rank is None else rank
        return range(r * self._nw, (r + 1) * self._nw)

    def _plan(self, slot: int) -> _Plan:
        key = (self.epoch, slot)
        if key not in self._plans:
            self._plans = {k: v for k, v in self._plans.items() if k[0] == self.epoch}
            self._plans[key] = _slot_plan(self.corpus, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle,
                                          slot=slot, num_slots=self.num_slots, shuffle_buffer=self.shuffle_buffer,
                                          batching=self._batching)
        return self._plans[key]

    def units_per_slot(self) -> list[int]:
        """Units (items, or batches in batch mode) of every slot in the current epoch (index only, no I/O)."""
        if self._batching is None:  # items: no need to simulate the shuffle buffer
            return [len(_slot_items(self.corpus, self.epoch, self.seed, self.shuffle, s, self.num_slots)[1])
                    for s in range(self.num_slots)]
        return [self._plan(s).num_units for s in range(self.num_slots)]

    def remaining_per_rank(self) -> list[int]:
        """Units each rank still has to deliver this epoch, from the recorded/loaded positions. After
        loading a merged (all-rank) state every rank computes the same list, so ``max(...)`` is the
        number of steps every rank should run (see the module docstring, "DDP and uneven ranks")."""
        units = self.units_per_slot()
        return [sum(units[s] - self._consumed.get(s, 0) for s in self.slots_of(r)) for r in range(self.world_size)]

    # -- iteration -----------------------------------------------------------------------------
    def _iter_slot(self, slot: int) -> Iterator[Any]:
        plan = self._plan(slot)
        epoch = self.epoch
        for u, recs in _read_units(self.corpus, plan, self._consumed.get(slot, 0)):
            items = []
            for s, g, rec in recs:
                it = _decode(self.corpus, s, g, rec)
                # position: the item's index in the slot's emission order (== unit in item mode)
                it.update(epoch=epoch, slot=slot, position=int(plan.bounds[u]) + len(items))
                items.append(self.transform(it) if self.transform is not None else it)
            if self._batching is None:
                out = items[0]
                if self.transform is not None:
                    if not isinstance(out, dict):
                        raise TypeError(f"in item mode transform must return a dict, got {type(out).__name__}")
                    out.update(epoch=epoch, slot=slot, position=u)
                yield out
            else:
                gs = plan.flat[plan.bounds[u]:plan.bounds[u + 1]]
                yield ShardBatch(items=items, epoch=epoch, slot=slot, unit=u, ids=[self.corpus.ids[g] for g in gs.tolist()],
                                 seconds=float(self.corpus.durations[gs].sum()),
                                 data=self.collate(items) if self.collate is not None else None)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        first = self._next_worker.get(self.rank, 0)
        base = self.rank * self._nw
        if info is not None:
            if info.num_workers != self._nw:
                raise RuntimeError(f"ShardDataset(num_workers={self.num_workers}) is iterated by a DataLoader with "
                                   f"{info.num_workers} workers; pass the same num_workers (or use .loader())")
            yield from self._iter_slot(base + (info.id + first) % self._nw)
            return
        # No workers: interleave this rank's slots as a DataLoader would (worker i serves slot first+i).
        active = deque(self._iter_slot(base + (first + i) % self._nw) for i in range(self._nw))
        while active:
            gen = active.popleft()
            try:
                x = next(gen)
            except StopIteration:
                continue
            yield x
            active.append(gen)

    def loader(self, **kwargs: Any) -> DataLoader:
        """A DataLoader that fits: ``batch_size=None``, this dataset's ``num_workers``, identity collate."""
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent workers would keep a stale epoch/position; ShardDataset needs fresh ones")
        kwargs.setdefault("collate_fn", _identity)
        return DataLoader(self, batch_size=None, num_workers=self.num_workers, **kwargs)

    # -- state ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate. A different epoch starts at its beginning; the current one keeps
        the recorded/loaded position (so ``load_state_dict`` then ``set_epoch(same)`` resumes)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._consumed, self._next_worker = {}, {}

    def record(self, unit: ShardBatch | dict[str, Any] | Sequence[dict[str, Any]]) -> None:
        """Mark a unit the training loop has finished: a ShardBatch, an item, or a list of items."""
        if isinstance(unit, ShardBatch):
            epoch, slot, pos = unit.epoch, unit.slot, unit.unit
        elif isinstance(unit, dict):
            if self._batching is not None:
                raise TypeError("in batch mode record the ShardBatch, not its items")
            epoch, slot, pos = int(unit["epoch"]), int(unit["slot"]), int(unit["position"])
        else:
            for it in unit:
                self.record(it)
            return
        if epoch != self.epoch:
            raise ValueError(f"recorded a unit of epoch {epoch} while the dataset is at epoch {self.epoch} (set_epoch?)")
        if slot not in self.slots_of():
            raise ValueError(f"recorded a unit of slot {slot}, which rank {self.rank} does not serve")
        self._consumed[slot] = max(self._consumed.get(slot, 0), pos + 1)
        self._next_worker[self.rank] = (slot - self.rank * self._nw + 1) % self._nw

    def _settings(self) -> dict[str, Any]:
        return {"format": _STATE_FORMAT, "fingerprint": self.corpus.fingerprint, "seed": self.seed,
                "shuffle": self.shuffle, "world_size": self.world_size, "num_workers": self._nw,
                "shuffle_buffer": self.shuffle_buffer, "max_seconds": self.max_seconds,
                "max_batch": self.max_batch, "bucket_size": self.bucket_size if self._batching else None,
                "epoch": self.epoch}

    def state_dict(self) -> dict[str, Any]:
        """This rank's state: epoch, units consumed by each of its slots, its next worker, and the
        settings a resume must match. Combine ranks with :func:`merge_states` / :meth:`gather_state_dict`."""
        return {**self._settings(), "rank": self.rank,
                "consumed": {s: self._consumed.get(s, 0) for s in self.slots_of()},
                "next_worker": {self.rank: self._next_worker.get(self.rank, 0)}}

    def gather_state_dict(self) -> dict[str, Any]:
        """The merged state of all ranks (an ``all_gather_object``; call on every rank). Without an
        initialised process group (or with world_size 1) this is :meth:`state_dict`."""
        import torch.distributed as dist

        if self.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return self.state_dict()
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, self.state_dict())
        return merge_states(states)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore epoch and positions from a merged state (or this rank's own). Raises ValueError if the
        corpus, seed, layout (world_size, num_workers) or batching differ: the saved positions would
        then point into different plans."""
        mine = self._settings()
        for k, v in mine.items():
            if k != "epoch" and state.get(k) != v:
                raise ValueError(f"shard state was saved with {k}={state.get(k)!r} but this dataset has {k}={v!r}; "
                                 "it cannot resume the same streams")
        consumed = {int(k): int(v) for k, v in state["consumed"].items()}
        missing = [s for s in self.slots_of() if s not in consumed]
        if missing:
            raise ValueError(f"shard state has no position for slots {missing} of rank {self.rank} "
                             "(a single other rank's state? save gather_state_dict())")
        self.epoch = int(state["epoch"])
        self._consumed = consumed
        self._next_worker = {int(k): int(v) for k, v in state["next_worker"].items()}

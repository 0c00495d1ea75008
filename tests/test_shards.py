"""Tests for speechlm.data.shards: tar shard writing, streaming splits over ranks x workers, exact resume, DDP."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.checkpoint.state import load_state, save_state
from speechlm.data import load_audio, read_manifest
from speechlm.data import shards as shards_mod
from speechlm.data.shards import (
    ShardBatch,
    ShardDataset,
    ShardedCuts,
    ShardError,
    batch_by_duration,
    iter_shards,
    merge_states,
    write_shards,
)

try:  # `python -m pytest` from the repo root
    from tests.factories import make_manifest
except ImportError:  # pytest's rootdir-less import mode puts tests/ itself on sys.path
    from factories import make_manifest

N_CUTS = 23
Q16 = 2.0 / 32768  # FLAC 16-bit round trip of 16-bit source audio: within about one LSB


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """23 factory cuts; two of them are inner spans of their file (start > 0), to check span cutting."""
    root = tmp_path_factory.mktemp("src")
    cuts = read_manifest(make_manifest(root, n=N_CUTS, seed=1))
    for i in (3, 7):
        cuts[i].start = 0.1
        cuts[i].duration = round(cuts[i].duration - 0.2, 6)
    return cuts


@pytest.fixture(scope="module")
def five(source, tmp_path_factory):
    """5 shards of <= 5 cuts (more shards than the 4 slots of 2 ranks x 2 workers)."""
    return write_shards(source, tmp_path_factory.mktemp("five"), max_cuts_per_shard=5, progress=False)


@pytest.fixture(scope="module")
def three(source, tmp_path_factory):
    """3 shards of <= 10 cuts (fewer shards than 4 slots)."""
    return write_shards(source, tmp_path_factory.mktemp("three"), max_cuts_per_shard=10, progress=False)


def _all_ids(source) -> list[str]:
    return [c.id for c in source]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def test_layout_is_webdataset_style(source, five):
    corpus = ShardedCuts(five)
    index = json.loads(five.read_text())
    assert [s["num_cuts"] for s in index["shards"]] == [5, 5, 5, 5, 3]
    assert corpus.ids == _all_ids(source)  # manifest order
    assert index["num_cuts"] == N_CUTS and len(corpus) == N_CUTS
    for sh in index["shards"]:
        assert abs(sh["seconds"] - sum(sh["durations"])) < 1e-4
    assert abs(corpus.total_seconds - sum(c.duration for c in source)) < 1e-3
    with tarfile.open(corpus.shards[0].path) as tar:
        names = tar.getnames()
        assert names == [f"{i}.{ext}" for i in corpus.ids[:5] for ext in ("flac", "json")]
        meta = json.loads(tar.extractfile(names[1]).read())
    assert set(meta) == {"id", "duration", "text", "labels", "sample_rate", "num_samples"}  # no audio path
    assert meta["labels"]["speaker"] == source[0].speaker
    assert sorted(p.name for p in five.parent.iterdir()) == ["index.json"] + [f"shard-{i:06d}.tar" for i in range(5)]


def test_roundtrip_audio_text_labels(source, five):
    items = list(iter_shards(five, shuffle=False))
    assert [it["id"] for it in items] == _all_ids(source)
    assert [it["position"] for it in items] == list(range(N_CUTS))
    for cut, it in zip(source, items):
        ref = load_audio(cut.audio, start=cut.start, duration=cut.duration)
        assert it["wave"].dtype == np.float32 and it["wave"].shape == ref.shape
        np.testing.assert_allclose(it["wave"], ref, atol=Q16, rtol=0)
        assert it["text"] == cut.text and it["labels"] == cut.labels
        assert abs(it["duration"] - ref.size / 16000) < 1e-6


def test_rerun_is_noop_rewrite_removes_stale(source, tmp_path):
    out = tmp_path / "sh"
    idx = write_shards(source, out, max_cuts_per_shard=5, progress=False, workers=1)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / ".shard-000000.tar.abc.tmp").write_bytes(b"crashed run")  # leftover of an interrupted write
    assert write_shards(source, out, max_cuts_per_shard=5, progress=False) == idx
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")} == stamp
    first = (out / "shard-000000.tar").read_bytes()
    write_shards(source, out, max_cuts_per_shard=5, progress=False, overwrite=True)
    assert (out / "shard-000000.tar").read_bytes() == first  # deterministic bytes
    # different settings: rewritten, stale shards and temporary files gone
    write_shards(source, out, max_cuts_per_shard=10, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(it["id"] for it in iter_shards(idx)) == sorted(_all_ids(source))
    # manifest path input gives the same corpus; a truncated shard is reported, not silently short
    man = make_manifest(tmp_path / "m", n=4)
    idx2 = write_shards(man, tmp_path / "m_sh", max_cuts_per_shard=2, progress=False)
    shard = ShardedCuts(idx2).shards[1].path
    shard.write_bytes(shard.read_bytes()[:1024])
    with pytest.raises(ShardError, match="shard-000001"):
        list(iter_shards(idx2, shuffle=False))


def test_bad_input_fails_fast_or_is_skipped(source, tmp_path):
    from speechlm.data import AudioError, Cut, ManifestError

    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"id": "a", "audio": "x.wav", "text": "t"}\n{"id": "a", "audio": "x.wav"}\n')
    with pytest.raises(ManifestError, match="bad.jsonl:2"):
        write_shards(bad_line, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()  # nothing written before the whole manifest parsed
    missing = [*source[:4], Cut(id="ghost", audio=str(tmp_path / "nope.wav"), duration=1.0, text="x")]
    with pytest.raises(AudioError, match="ghost"):
        write_shards(missing, tmp_path / "strict", max_cuts_per_shard=2, progress=False)
    assert not (tmp_path / "strict" / "index.json").exists()
    idx = write_shards(missing, tmp_path / "lenient", max_cuts_per_shard=2, progress=False, skip_bad=True)
    corpus = ShardedCuts(idx)
    assert len(corpus) == 4 and [s["id"] for s in corpus.skipped] == ["ghost"]


def test_max_bytes_closes_shards(source, tmp_path):
    idx = write_shards(source, tmp_path / "sh", max_cuts_per_shard=100, max_bytes=60_000, progress=False)
    corpus = ShardedCuts(idx)
    assert len(corpus.shards) > 3
    for sh in corpus.shards:
        assert sh.bytes <= 60_000 or sh.num_cuts == 1
    assert corpus.ids == _all_ids(source)


# ---------------------------------------------------------------------------------------------
# splitting, determinism, resume
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["five", "three"])
def test_split_ranks_x_workers_disjoint_and_covering(which, request, source):
    corpus = ShardedCuts(request.getfixturevalue(which))
    for epoch in (0, 1):
        per_slot = []
        for rank in range(2):
            for worker in range(2):
                per_slot.append([it["id"] for it in iter_shards(corpus, rank=rank, world_size=2, worker_id=worker,
                                                                num_workers=2, epoch=epoch, seed=5, shuffle_buffer=4)])
        flat = [i for s in per_slot for i in s]
        assert len(flat) == len(set(flat)) == N_CUTS and set(flat) == set(_all_ids(source))
        shard_sets = [set(corpus.ids[corpus.offsets[k]:corpus.offsets[k + 1]]) for k in range(len(corpus.shards))]
        if len(corpus.shards) >= 4:  # whole shards per slot
            for s in per_slot:
                assert set(s) == set().union(*[sh for sh in shard_sets if sh & set(s)])
        else:  # items dealt by a global counter: slot sizes differ by at most one
            assert sorted(len(s) for s in per_slot) == [5, 6, 6, 6]


def test_order_deterministic_per_seed_and_epoch(five, source):
    def ids(**kw):
        return [it["id"] for it in iter_shards(five, shuffle_buffer=6, **kw)]

    a = ids(seed=1, epoch=0)
    assert a == ids(seed=1, epoch=0)
    assert a != ids(seed=1, epoch=1) and a != ids(seed=2, epoch=0)
    assert sorted(a) == sorted(_all_ids(source))
    assert ids(shuffle=False) == _all_ids(source)


@pytest.mark.parametrize("k", [0, 1, 4, 9, -2])
def test_resume_mid_epoch_is_exact(five, k, monkeypatch):
    kw = dict(rank=0, world_size=2, worker_id=0, num_workers=1, epoch=3, seed=11, shuffle_buffer=4)
    full = list(iter_shards(five, **kw))
    assert len(full) > 9
    k = k % len(full)
    before = full[:k]
    start = before[-1]["position"] + 1 if before else 0
    opened: list[str] = []
    real = shards_mod._iter_tar
    monkeypatch.setattr(shards_mod, "_iter_tar", lambda p, w: (opened.append(Path(p).name), real(p, w))[1])
    rest = list(iter_shards(five, start=start, **kw))
    assert [it["id"] for it in before + rest] == [it["id"] for it in full]
    for a, b in zip(rest, full[k:]):
        np.testing.assert_array_equal(a["wave"], b["wave"])
    assert len(opened) == len(set(opened))  # every tar read once, front to back
    # a shard is opened again only if some of its items are still due; fully consumed ones are skipped
    corpus = ShardedCuts(five)
    rest_ids = {it["id"] for it in rest}
    due = {corpus.shards[s].path.name for s in range(len(corpus.shards))
           if rest_ids & set(corpus.ids[corpus.offsets[s]:corpus.offsets[s + 1]])}
    assert set(opened) == due
    if k == len(full) - 2:  # 2 items left: at most 2 of the slot's 3 shards are read again
        assert len(due) < len({corpus.shards[s].path.name for s in range(len(corpus.shards))
                               if {it["id"] for it in full} & set(corpus.ids[corpus.offsets[s]:corpus.offsets[s + 1]])})


def test_batches_respect_budget(five, source):
    ds = ShardDataset(five, max_seconds=3.0, max_batch=3, seed=2, shuffle_buffer=5, bucket_size=8)
    batches = list(ds)
    assert all(isinstance(b, ShardBatch) for b in batches)
    ids = [i for b in batches for i in b.ids]
    assert sorted(ids) == sorted(_all_ids(source))
    for b in batches:
        assert len(b) <= 3 and (b.seconds <= 3.0 + 1e-9 or len(b) == 1)
        assert [it["id"] for it in b.items] == b.ids
        durs = [it["duration"] for it in b.items]
        assert durs == sorted(durs)
    assert sum(ds.units_per_slot()) == len(batches) == ds.remaining_per_rank()[0]
    # the generic helper on any item stream
    stream = list(iter_shards(five, shuffle=False))
    groups = list(batch_by_duration(stream, max_seconds=2.5, max_batch=2, bucket_size=10, shuffle=True, seed=0))
    assert sorted(it["id"] for g in groups for it in g) == sorted(_all_ids(source))
    assert all(len(g) <= 2 and (sum(it["duration"] for it in g) <= 2.5 or len(g) == 1) for g in groups)


@pytest.mark.parametrize("k", [1, 3])
def test_dataloader_workers_order_and_resume(five, k):
    kw = dict(num_workers=2, seed=4, max_seconds=2.5, max_batch=4, shuffle_buffer=4, bucket_size=6)
    ds = ShardDataset(five, **kw)
    ds.set_epoch(1)
    inproc = [b.ids for b in ds]  # no workers: interleaves its 2 slots like a DataLoader would
    full = [b.ids for b in ds.loader()]
    assert full == inproc and len(full) > k
    part = ShardDataset(five, **kw)
    part.set_epoch(1)
    before = []
    for b in part.loader():
        before.append(b.ids)
        part.record(b)
        if len(before) == k:
            break
    state = part.state_dict()
    resumed = ShardDataset(five, **kw)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives JSON (string keys) as well
    resumed.set_epoch(1)  # same epoch: keeps the position
    assert resumed.remaining_per_rank() == [len(full) - k]
    assert before + [b.ids for b in resumed.loader()] == full  # worker interleaving resumes exactly too
    resumed.set_epoch(2)
    assert sorted(i for b in resumed.loader() for i in b.ids) == sorted(i for b in full for i in b)
    with pytest.raises(ValueError, match="seed"):
        ShardDataset(five, **{**kw, "seed": 5}).load_state_dict(state)
    with pytest.raises(ValueError, match="num_workers"):
        ShardDataset(five, **{**kw, "num_workers": 1}).load_state_dict(state)


def test_merged_state_of_two_ranks(three, source):
    """Per-rank states -> one checkpoint state; every rank resumes its own streams from it."""
    kw = dict(world_size=2, num_workers=2, seed=9, max_seconds=3.0, shuffle_buffer=3, bucket_size=4)
    ranks = [ShardDataset(three, rank=r, **kw) for r in range(2)]
    before = []
    for r, ds in enumerate(ranks):
        for i, b in enumerate(ds):
            if i == 1 + r:
                break
            before += b.ids
            ds.record(b)
    state = merge_states([ds.state_dict() for ds in ranks])
    assert sorted(state["consumed"]) == [0, 1, 2, 3]
    after, remaining = [], []
    for r in range(2):
        ds = ShardDataset(three, rank=r, **kw)
        ds.load_state_dict(state)
        remaining.append(ds.remaining_per_rank())
        after += [i for b in ds for i in b.ids]
    assert remaining[0] == remaining[1]
    assert Counter(before + after) == Counter(_all_ids(source))
    with pytest.raises(ValueError, match="slots"):
        ShardDataset(three, rank=1, **kw).load_state_dict(ranks[0].state_dict())  # rank 0's state alone


def test_item_mode_dataloader_with_transform(three, source):
    ds = ShardDataset(three, num_workers=2, seed=0, shuffle_buffer=3,
                      transform=lambda it: {"id": it["id"], "wave": torch.from_numpy(it["wave"])})
    items = list(ds.loader())
    assert sorted(it["id"] for it in items) == sorted(_all_ids(source))
    assert all(isinstance(it["wave"], torch.Tensor) and {"slot", "position", "epoch"} <= set(it) for it in items)
    ds.record(items[:5])
    st = ds.state_dict()
    assert sum(st["consumed"].values()) == 5


# ---------------------------------------------------------------------------------------------
# real DDP: 2 processes (gloo), DataLoader workers inside each
# ---------------------------------------------------------------------------------------------
_DDP_KW = dict(world_size=2, num_workers=2, seed=7, max_seconds=4.0, max_batch=8, shuffle_buffer=4, bucket_size=6)


def _ddp_worker(rank: int, init_file: str, index: str, out: str, phase: str, k: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    # mp.spawn leaves "spawn" as this child's start method; fork the DataLoader workers as torchrun would
    fork = {"multiprocessing_context": "fork"}
    try:
        out_dir = Path(out)
        if phase == "first":
            ds = ShardDataset(index, rank=rank, **_DDP_KW)
            full = [b.ids for b in ds.loader(**fork)]
            everyone: list = [None, None]
            dist.all_gather_object(everyone, full)
            part = ShardDataset(index, rank=rank, **_DDP_KW)
            before = []
            for b in part.loader(**fork):
                before.append(b.ids)
                part.record(b)
                if len(before) == k:
                    break
            state = part.gather_state_dict()  # collective: every rank
            if rank == 0:
                save_state(out_dir, state)
            result = {"full": everyone, "before": before}
        else:
            ds = ShardDataset(index, rank=rank, **_DDP_KW)
            ds.load_state_dict(load_state(out_dir))
            remaining = ds.remaining_per_rank()
            after = [b.ids for b in ds.loader(**fork)]
            everyone = [None, None]
            dist.all_gather_object(everyone, after)
            result = {"after": everyone, "remaining": remaining}
        (out_dir / f"{phase}-{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo + fork workers on linux")
def test_ddp_two_processes_split_and_resume(five, source, tmp_path):
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    k = 2
    for phase in ("first", "resume"):
        mp.spawn(_ddp_worker, args=(str(tmp_path / f"init-{phase}"), str(five), str(tmp_path), phase, k), nprocs=2, join=True)
    first = [json.loads((tmp_path / f"first-{r}.json").read_text()) for r in range(2)]
    resume = [json.loads((tmp_path / f"resume-{r}.json").read_text()) for r in range(2)]
    full = first[0]["full"]  # per rank: list of batches (lists of ids)
    union = [i for rank_batches in full for b in rank_batches for i in b]
    assert Counter(union) == Counter(_all_ids(source))  # every cut exactly once over both ranks
    after = resume[0]["after"]
    assert resume[0]["remaining"] == resume[1]["remaining"] == [len(after[0]), len(after[1])]
    both = []
    for r in range(2):
        assert len(first[r]["before"]) == k
        assert first[r]["before"] + after[r] == full[r]  # exact resume on each rank
        both += [i for b in first[r]["before"] + after[r] for i in b]
    assert Counter(both) == Counter(_all_ids(source))

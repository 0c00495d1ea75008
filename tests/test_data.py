"""Tests for speechlm.data: manifests, validation, audio loading, the batch sampler and the corpora."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechlm.data import (
    AudioError,
    Cut,
    DurationBatchSampler,
    ManifestError,
    audio_info,
    iter_manifest,
    load_audio,
    read_manifest,
    validate,
    write_audio,
    write_manifest,
)
from speechlm.utils import real_data_root

try:  # `python -m pytest` from the repo root
    from tests.factories import (BAD_LINE_KINDS, make_bad_line_manifest, make_corrupt_file, make_manifest,
                                 make_sine_or_noise_wav)
except ImportError:  # pytest's rootdir-less import mode puts tests/ itself on sys.path
    from factories import (BAD_LINE_KINDS, make_bad_line_manifest, make_corrupt_file, make_manifest,
                           make_sine_or_noise_wav)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _append(path: Path, record: dict) -> int:
    """Append a line to a manifest; returns its 1-based line number."""
    n = len(path.read_text(encoding="utf-8").splitlines())
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return n + 1


# ---------------------------------------------------------------------------------------------
# Manifest reading and writing
# ---------------------------------------------------------------------------------------------


def test_read_toolkit_layout(tmp_path):
    path = make_manifest(tmp_path, n=6, extra={"emotion": "neutral"})
    cuts = read_manifest(path)
    recs = _lines(path)
    assert [c.id for c in cuts] == [r["id"] for r in recs]
    for c, r in zip(cuts, recs):
        assert os.path.isabs(c.audio) and Path(c.audio) == (tmp_path / r["audio"]).resolve()
        assert c.duration == pytest.approx(r["duration"])
        assert c.start == 0.0
        assert c.text == r["text"]
        assert c.speaker == r["speaker"] and c.language == "en"
        assert c.labels["gender"] == r["gender"] and c.labels["emotion"] == "neutral"
        assert "audio" not in c.labels and "text" not in c.labels
        assert c.source.endswith(f"{path}:{recs.index(r) + 1}")


def test_read_real_layout_with_path_key(tmp_path):
    path = make_manifest(tmp_path, n=4, layout="real")
    assert "path" in _lines(path)[0] and "audio" not in _lines(path)[0]
    cuts = read_manifest(path)
    assert len(cuts) == 4 and all(Path(c.audio).exists() for c in cuts)
    assert cuts[0].labels["sr"] == 16000 and "path" not in cuts[0].labels


def test_relative_paths_resolve_against_manifest_folder_not_cwd(tmp_path, monkeypatch):
    path = make_manifest(tmp_path / "corpus", n=2)
    monkeypatch.chdir(tmp_path)  # a different folder than the manifest's
    cut = read_manifest(path)[0]
    assert Path(cut.audio) == (tmp_path / "corpus" / "audio" / "utt000.wav").resolve()


def test_duration_read_from_header_when_absent(tmp_path):
    make_sine_or_noise_wav(tmp_path / "a.wav", 1.5)
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "hi"}) + "\n"
                    + json.dumps({"id": "b", "audio": "a.wav", "start": 0.5, "text": "hi"}) + "\n\n")
    a, b = read_manifest(path)  # the blank line is skipped
    assert a.duration == pytest.approx(1.5) and b.duration == pytest.approx(1.0) and b.end == pytest.approx(1.5)


def test_nested_labels_and_round_trip(tmp_path):
    path = make_manifest(tmp_path, n=3)
    cuts = read_manifest(path)
    cuts[0].labels["extra"] = {"nested": [1, 2]}
    cuts[1].labels["start"] = "label named like a schema key"  # must survive, nested
    out = tmp_path / "out" / "copy.jsonl"
    assert write_manifest(out, cuts) == 3
    again = read_manifest(out)
    assert [c.id for c in again] == [c.id for c in cuts]
    assert [c.audio for c in again] == [c.audio for c in cuts]  # absolute paths kept
    assert again[0].labels["extra"] == {"nested": [1, 2]}
    assert again[1].labels["start"] == "label named like a schema key" and again[1].start == 0.0
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    rel = tmp_path / "rel.jsonl"
    write_manifest(rel, cuts, relative_paths=True)
    assert _lines(rel)[0]["audio"] == "audio/utt000.wav"
    assert [c.audio for c in read_manifest(rel)] == [c.audio for c in cuts]
    # dicts are written as they are
    write_manifest(tmp_path / "d.jsonl", [{"id": "x", "audio": "a.wav", "text": "t"}])
    assert _lines(tmp_path / "d.jsonl") == [{"id": "x", "audio": "a.wav", "text": "t"}]
    with pytest.raises(ManifestError):
        write_manifest(tmp_path / "e.jsonl", [{"text": "no id"}])


def test_iter_manifest_is_lazy(tmp_path):
    path, line, _ = make_bad_line_manifest(tmp_path, "malformed_json", n=4, at=3)
    it = iter_manifest(path)
    assert next(it).id == "utt000" and next(it).id == "utt001"  # lines before the bad one are fine
    with pytest.raises(ManifestError):
        next(it)


@pytest.mark.parametrize("kind", BAD_LINE_KINDS)
def test_bad_lines_name_file_line_and_field(tmp_path, kind):
    path, line, field = make_bad_line_manifest(tmp_path, kind)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert field in msg, msg
    if field not in ("JSON", "object"):
        assert f"field '{field}'" in msg, msg
    if kind == "duplicate_id":
        assert f"{path}:1" in msg  # where the id was first seen
    assert err.value.problems and err.value.problems[0][0] == f"{path}:{line}"


def test_error_message_format_example(tmp_path):
    path = make_manifest(tmp_path, n=2, name="train.jsonl")
    line = _append(path, {"id": "e", "audio": "audio/utt000.wav", "text": "   "})
    with pytest.raises(ManifestError) as err:
        validate(read_manifest(path))
    assert f"{path}:{line}: field 'text': empty transcript" in str(err.value)
    assert str((tmp_path / "audio" / "utt000.wav").resolve()) in str(err.value)  # names the audio too


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def test_validate_good_manifest(tmp_path):
    path = make_manifest(tmp_path, n=5, sr=8000)
    report = validate(read_manifest(path))
    assert report.n_good == 5 and report.n_bad == 0 and report.total == 5
    assert report.resampled == 5  # 8 kHz files: fine, resampled on load
    assert report.hours == pytest.approx(sum(r["duration"] for r in _lines(path)) / 3600)
    assert "5/5" in report.summary()


def _broken_manifest(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, str]]]:
    """A manifest with 4 good lines and one line for each validation problem."""
    path = make_manifest(tmp_path, n=4, name="train.jsonl")
    make_corrupt_file(tmp_path / "audio" / "garbage.wav", "garbage")
    make_corrupt_file(tmp_path / "audio" / "trunc.wav", "truncated")
    make_corrupt_file(tmp_path / "audio" / "empty.flac", "empty")
    make_sine_or_noise_wav(tmp_path / "audio" / "long.wav", 3.0)
    cases = {
        "missing": ({"id": "m", "audio": "audio/nope.wav", "duration": 1.0, "text": "x"}, "file not found"),
        "garbage": ({"id": "g", "audio": "audio/garbage.wav", "duration": 1.0, "text": "x"}, "corrupt"),
        "trunc": ({"id": "t", "audio": "audio/trunc.wav", "text": "x"}, "corrupt"),
        "emptyfile": ({"id": "z", "audio": "audio/empty.flac", "text": "x"}, "corrupt"),
        "too_long": ({"id": "l", "audio": "audio/long.wav", "text": "long one"}, "exceeds max_duration"),
        "no_text": ({"id": "n", "audio": "audio/utt001.wav", "text": ""}, "empty transcript"),
        "past_end": ({"id": "p", "audio": "audio/utt001.wav", "start": 0.2, "duration": 9.0, "text": "x"}, "file is"),
    }
    where = {k: (_append(path, rec), reason) for k, (rec, reason) in cases.items()}
    return path, where


def test_validate_reports_every_problem_with_source(tmp_path):
    path, where = _broken_manifest(tmp_path)
    cuts = read_manifest(path)
    with pytest.raises(ManifestError) as err:
        validate(cuts, max_duration=2.5)
    assert len(err.value.problems) == len(where)
    msg = str(err.value)
    assert f"{len(where)} of {len(cuts)}" in msg and "... and 2 more" in msg  # lists the first five
    by_source = dict(err.value.problems)
    for key, (line, reason) in where.items():
        got = by_source[f"{path}:{line}"]
        assert reason in got, (key, got)
    assert "field 'audio'" in by_source[f"{path}:{where['missing'][0]}"]
    assert str(tmp_path / "audio" / "nope.wav") in by_source[f"{path}:{where['missing'][0]}"]
    assert "field 'duration'" in by_source[f"{path}:{where['too_long'][0]}"]


def test_validate_skip_bad_counts(tmp_path):
    path, where = _broken_manifest(tmp_path)
    report = validate(read_manifest(path), max_duration=2.5, skip_bad=True)
    assert report.n_good == 4 and report.n_bad == len(where) and report.total == 4 + len(where)
    assert [c.id for c in report.good] == ["utt000", "utt001", "utt002", "utt003"]
    assert report.reasons["field 'audio': cannot read audio header (corrupt or unsupported format)"] == 3
    assert report.reasons["field 'audio': file not found"] == 1
    assert report.reasons["field 'text'"] == 1
    assert "skipped" in report.summary()
    # without max_duration the long clip is fine; without the audio check only the text/length ones fail
    assert validate(read_manifest(path), max_duration=None, skip_bad=True).n_bad == len(where) - 1
    assert validate(read_manifest(path), max_duration=None, check_audio=False, skip_bad=True).n_bad == 3


def test_validate_path_skips_unparsable_lines(tmp_path):
    path, line, _ = make_bad_line_manifest(tmp_path, "malformed_json", n=4, at=2)
    report = validate(path, skip_bad=True)
    assert report.n_good == 4 and report.n_bad == 1 and report.total == 5
    assert report.bad[0][0] == f"{path}:{line}" and "malformed JSON" in report.bad[0][1]
    with pytest.raises(ManifestError):
        validate(path)


def test_validate_required_label_fields(tmp_path):
    path = make_manifest(tmp_path, n=3)
    cuts = read_manifest(path)
    del cuts[1].labels["speaker"]
    report = validate(cuts, required_fields=("text", "speaker"), skip_bad=True)
    assert report.n_bad == 1 and "field 'speaker': missing or empty" in report.bad[0][1]
    assert validate(cuts, required_fields=(), skip_bad=True).n_bad == 0


def test_validate_cuts_built_in_code(tmp_path):
    ok = make_sine_or_noise_wav(tmp_path / "ok.wav", 1.0)
    cuts = [Cut(id="a", audio=str(ok), duration=1.0, text="hi"),
            Cut(id="b", audio=str(tmp_path / "gone.wav"), duration=1.0, text="hi"),
            Cut(id="c", audio=str(ok), text="no duration")]
    report = validate(cuts, skip_bad=True)
    assert [c.id for c in report.good] == ["a"]
    assert [s for s, _ in report.bad] == ["cut 'b'", "cut 'c'"]  # no file:line, so the id is named
    assert "field 'duration': unknown" in report.bad[1][1]


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


def test_load_audio_mono_16k(tmp_path):
    p = make_sine_or_noise_wav(tmp_path / "a.wav", 1.0, freq=440)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) == 16000
    ref, _ = sf.read(p, dtype="float32")
    np.testing.assert_array_equal(x, ref)
    assert audio_info(p) == (16000, 16000, 1)


def test_load_audio_resamples_8k(tmp_path):
    p = make_sine_or_noise_wav(tmp_path / "a8.wav", 1.0, sr=8000, freq=500)
    assert audio_info(p) == (8000, 8000, 1)
    x = load_audio(p, sample_rate=16000)
    assert abs(len(x) - 16000) <= 2
    assert _peak_hz(x, 16000) == pytest.approx(500, abs=3)  # same tone after resampling
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.02)
    assert len(load_audio(p, sample_rate=None)) == 8000  # None keeps the native rate


def test_load_audio_averages_stereo(tmp_path):
    p = make_sine_or_noise_wav(tmp_path / "st.flac", 0.5, channels=2, freq=300)
    assert audio_info(p)[2] == 2
    x = load_audio(p)
    both, _ = sf.read(p, dtype="float32")
    np.testing.assert_allclose(x, both.mean(axis=1), atol=1e-6)  # average of L and L/2, not L alone
    assert np.abs(x).max() == pytest.approx(0.75 * 0.5, abs=0.01)


def test_load_audio_segment(tmp_path):
    p = make_sine_or_noise_wav(tmp_path / "n.wav", 2.0, kind="noise", sr=8000)
    full = load_audio(p, sample_rate=None)
    seg = load_audio(p, start=0.5, duration=0.25, sample_rate=None)
    np.testing.assert_array_equal(seg, full[4000:6000])
    assert len(load_audio(p, start=1.9, duration=1.0, sample_rate=None)) == 800  # short, not padded
    assert len(load_audio(p, start=0.5, duration=0.25)) == 4000


def test_audio_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="not found.*missing.wav"):
        load_audio(missing)
    for kind in ("garbage", "truncated", "empty"):
        bad = make_corrupt_file(tmp_path / f"{kind}.wav", kind)
        with pytest.raises(AudioError, match=f"corrupt.*{kind}.wav"):
            load_audio(bad)
        with pytest.raises(AudioError):
            audio_info(bad)
    ok = make_sine_or_noise_wav(tmp_path / "ok.wav", 0.5)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(ok, start=1.0)
    assert issubclass(AudioError, RuntimeError)


def test_write_audio_round_trip(tmp_path):
    x = (0.3 * np.sin(np.linspace(0, 100, 8000))).astype(np.float32)
    p = write_audio(tmp_path / "sub" / "w.flac", x, 16000)
    y = load_audio(p)
    assert len(y) == 8000 and np.abs(y - x).max() < 1e-3
    with pytest.raises(ValueError):
        write_audio(tmp_path / "w.mp4", x, 16000)


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


def _durations(n=500, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 20.0, n)


def test_sampler_budget_and_coverage():
    d = _durations()
    s = DurationBatchSampler(d, max_seconds=60.0, max_batch=16, seed=1, bucket_size=200)
    batches = list(s)
    assert len(batches) == len(s.global_batches(0)) and s.dropped == 0
    for b in batches:
        assert sum(d[b]) <= 60.0 + 1e-9 and 1 <= len(b) <= 16
        assert all(isinstance(i, int) for i in b)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(d)))  # every item exactly once
    assert np.mean([sum(d[b]) for b in batches]) > 40  # greedy packing fills the budget well


def test_sampler_buckets_similar_lengths():
    d = _durations(1000)
    s = DurationBatchSampler(d, max_seconds=80.0, seed=0, bucket_size=500)
    spread = np.mean([np.ptp(d[b]) for b in s.global_batches(0) if len(b) > 1])
    rng = np.random.default_rng(0)
    random_spread = np.mean([np.ptp(d[rng.choice(len(d), 8, replace=False)]) for _ in range(200)])
    assert spread < 0.1 * random_spread, (spread, random_spread)
    # batch order is shuffled: the first batches are not all the shortest clips
    firsts = [float(np.mean(d[b])) for b in s.global_batches(0)[:10]]
    assert max(firsts) - min(firsts) > 5.0


def test_sampler_determinism_and_epochs():
    d = _durations(300)
    a = DurationBatchSampler(d, max_seconds=50.0, seed=3)
    b = DurationBatchSampler(d, max_seconds=50.0, seed=3)
    assert a.global_batches(0) == b.global_batches(0)
    assert a.global_batches(0) != a.global_batches(1)  # reshuffled per epoch
    assert a.global_batches(0) != DurationBatchSampler(d, max_seconds=50.0, seed=4).global_batches(0)
    # iterating a full epoch moves to the next one by itself; set_epoch selects explicitly
    e0 = list(a)
    assert a.epoch == 1 and list(a) == a.global_batches(1)
    b.set_epoch(1)
    assert list(b) == a.global_batches(1)
    assert e0 == a.global_batches(0)
    # shuffle=False: one fixed order sorted by duration
    f = DurationBatchSampler(d, max_seconds=50.0, shuffle=False)
    flat = [i for bb in f for i in bb]
    assert list(d[flat]) == sorted(d) and f.global_batches(0) == f.global_batches(5)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_sampler_ddp_shards_disjoint_and_covering(world_size):
    d = _durations(400, seed=world_size)
    kw = dict(max_seconds=120.0, max_batch=32, seed=7, bucket_size=100, world_size=world_size)
    ranks = [DurationBatchSampler(d, rank=r, **kw) for r in range(world_size)]
    per_rank = [list(s) for s in ranks]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == len(ranks[0].global_batches(0))
    globals_ = ranks[0].global_batches(0)
    for step, g in enumerate(globals_):
        shards = [per_rank[r][step] for r in range(world_size)]
        assert all(len(sh) >= 1 for sh in shards)  # no rank ever gets an empty batch
        flat = [i for sh in shards for i in sh]
        assert len(flat) == len(set(flat)) and sorted(flat) == sorted(g)
        # shards of a sorted global batch have similar total seconds
        secs = [sum(d[sh]) for sh in shards]
        assert max(secs) - min(secs) <= max(d[g]) + 1e-9
    covered = [i for p in per_rank for b in p for i in b]
    assert len(covered) == len(set(covered))
    # budget >= world_size * longest clip: at most world_size - 1 cuts are left out of an epoch
    assert ranks[0].dropped < world_size and len(covered) + ranks[0].dropped == len(d)


def test_sampler_ddp_drops_batches_smaller_than_world():
    d = np.array([10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no item exceeds the budget: no warning
        s = DurationBatchSampler(d, max_seconds=10.0, seed=0, world_size=2, rank=0)
    assert len(s) == 1 and s.dropped == 3  # three lone 10 s clips dropped, the 1 s clips make one batch
    for r in range(2):
        for b in DurationBatchSampler(d, max_seconds=10.0, world_size=2, rank=r):
            assert len(b) >= 1


def test_sampler_exact_mid_epoch_resume():
    d = _durations(300)
    kw = dict(max_seconds=40.0, seed=11, world_size=2, rank=1)
    ref = DurationBatchSampler(d, **kw)
    ref.set_epoch(2)
    full = list(ref)
    s = DurationBatchSampler(d, **kw)
    s.set_epoch(2)
    it = iter(s)
    head = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(s.state_dict()))  # survives a JSON checkpoint
    assert state["epoch"] == 2 and state["position"] == 7
    resumed = DurationBatchSampler(d, **kw)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # re-setting the same epoch keeps the position
    assert resumed.remaining() == len(full) - 7
    rest = list(resumed)
    assert head + rest == full
    assert resumed.epoch == 3 and resumed.position == 0  # next epoch starts from the top
    # consumed= overrides the position (DataLoader prefetch runs the sampler ahead of training)
    assert s.state_dict(consumed=5)["position"] == 5
    with pytest.raises(ValueError, match="seed"):
        DurationBatchSampler(d, max_seconds=40.0, seed=12).load_state_dict(state)
    with pytest.raises(ValueError, match="num_items"):
        DurationBatchSampler(d[:-1], **kw).load_state_dict(state)


def test_sampler_as_torch_batch_sampler_and_bad_args():
    torch = pytest.importorskip("torch")
    d = _durations(50)
    ds = torch.utils.data.TensorDataset(torch.arange(50))
    s = DurationBatchSampler(d, max_seconds=30.0, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=s)
    got = sorted(int(i) for (b,) in loader for i in b)
    assert got == list(range(50))
    with pytest.warns(UserWarning, match="longer than max_seconds"):
        big = DurationBatchSampler(d, max_seconds=5.0)
    assert sorted(i for b in big for i in b) == list(range(50))  # long items still yielded, alone
    for bad in (dict(max_seconds=0), dict(max_seconds=10, rank=2, world_size=2), dict(max_seconds=10, max_batch=0)):
        with pytest.raises(ValueError):
            DurationBatchSampler(d, **bad)
    with pytest.raises(ValueError):
        DurationBatchSampler([1.0, float("nan")], max_seconds=10)


# ---------------------------------------------------------------------------------------------
# Synthetic corpus
# ---------------------------------------------------------------------------------------------

_HAVE_TTS = bool(shutil.which("espeak-ng") or shutil.which("flite"))


@pytest.mark.skipif(not _HAVE_TTS, reason="no TTS engine (apt-get install espeak-ng flite)")
def test_synthetic_corpus_small(tmp_path):
    from speechlm.corpora.synth import available_voices, build_synthetic_corpus

    voices = available_voices()
    assert {v.gender for v in voices} <= {"male", "female"} and len({v.speaker for v in voices}) == len(voices)
    manifest = build_synthetic_corpus(tmp_path / "synth", n_utterances=6, seed=0, workers=2, progress=False)
    cuts = validate(manifest, max_duration=8.0).good
    assert len(cuts) == 6
    speakers = {v.speaker: v for v in voices}
    for c in cuts:
        assert 0.5 <= c.duration <= 8.0
        assert sf.info(c.audio).samplerate == 16000 and sf.info(c.audio).channels == 1
        assert sf.info(c.audio).duration == pytest.approx(c.duration, abs=1e-3)
        assert c.text and not any(ch.isdigit() for ch in c.text)  # numbers are spelled out
        v = speakers[c.speaker]
        assert c.labels["gender"] == v.gender and c.labels["engine"] == v.engine
        assert c.speaker == f"{c.labels['engine']}:{v.name}"
        assert c.labels["rate"] > 0 and c.language == "en"
    info = json.loads((tmp_path / "synth" / "corpus.json").read_text())
    assert info["n_utterances"] == 6 and info["seed"] == 0
    # Re-running skips existing files and writes the same manifest.
    before = manifest.read_text()
    mtimes = {c.audio: os.path.getmtime(c.audio) for c in cuts}
    t0 = time.time()
    assert build_synthetic_corpus(tmp_path / "synth", n_utterances=6, seed=0, progress=False).read_text() == before
    assert time.time() - t0 < 5 and all(os.path.getmtime(a) == m for a, m in mtimes.items())


def test_synthetic_plan_deterministic_and_extends():
    from speechlm.corpora.synth import SENTENCES, Voice, _plan

    voices = [Voice("espeak-ng", "en-us+m1", "male", "en-us", "espeak-ng:m1", (30.0, 70.0)),
              Voice("espeak-ng", "en-us+f2", "female", "en-us", "espeak-ng:f2", (30.0, 70.0))]
    a, b = _plan(40, 5, voices), _plan(60, 5, voices)
    assert a == b[:40]  # a larger corpus extends a smaller one with the same seed
    assert a != _plan(40, 6, voices)
    assert {p["voice"].gender for p in b} == {"male", "female"}
    assert len(SENTENCES) >= 200 and len(set(SENTENCES)) == len(SENTENCES)
    assert not any(ch.isdigit() for s in SENTENCES for ch in s)


def test_available_voices_without_engines(monkeypatch):
    from speechlm.corpora import synth

    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng flite"):
        synth.available_voices()


# ---------------------------------------------------------------------------------------------
# Real splits
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(real_data_root() is None, reason="shared real data not present")
def test_real_splits_speaker_disjoint(tmp_path):
    from speechlm.corpora.real import prepare_real_splits

    paths = prepare_real_splits(real_data_root(), tmp_path, test_speakers_per_source=2, seed=0,
                                max_train_per_source=100)
    assert set(paths) == {"train", "test", "test_open"}
    train, test, test_open = (read_manifest(paths[k]) for k in ("train", "test", "test_open"))
    assert len(test_open) == 25 and all(c.labels["corpus"] == "asr_en" for c in test_open)
    for corpus in ("fsdd", "ravdess"):
        tr = [c for c in train if c.labels["corpus"] == corpus]
        te = [c for c in test if c.labels["corpus"] == corpus]
        assert 0 < len(tr) <= 100 and te
        tr_spk, te_spk = {c.speaker for c in tr}, {c.speaker for c in te}
        assert len(te_spk) == 2 and not tr_spk & te_spk
    rav_test = [c for c in test if c.labels["corpus"] == "ravdess"]
    assert {c.labels["gender"] for c in rav_test} == {"male", "female"}  # one of each
    assert all("emotion" in c.labels for c in rav_test)
    assert {c.text for c in test if c.labels["corpus"] == "fsdd"} <= {
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert all(c.text and os.path.isabs(_lines(paths["train"])[0]["audio"]) for c in train)
    assert not {c.id for c in train} & {c.id for c in test}
    validate(train + test + test_open, max_duration=30.0)  # every referenced file exists and reads
    again = prepare_real_splits(real_data_root(), tmp_path / "again", seed=0, max_train_per_source=100)
    assert paths["train"].read_text() == again["train"].read_text()  # deterministic
    info = json.loads((tmp_path / "splits.json").read_text())
    assert info["sources"]["fsdd"]["test_speakers"] == sorted({c.speaker for c in test if c.labels["corpus"] == "fsdd"})

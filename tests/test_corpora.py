"""Corpus recipes (speechlm.corpora) on tiny trees laid out like each real corpus (tests/corpus_fixtures.py)."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
from corpus_fixtures import BAD_LINES, FIXTURES, _signal, make_hf_parquet, manifest_lines

from speechlm.corpora import CORPORA, CORPUS_DOCS, CorpusError, export_lhotse
from speechlm.data.audio import audio_info
from speechlm.data.manifest import Cut, read_manifest, validate, write_manifest
from speechlm.utils import real_data_root


def run(name: str, src: Path, out: Path, **kw) -> dict[str, Path]:
    return CORPORA[name](src, out, workers=2, progress=False, **kw)


def check(paths: dict[str, Path], expected: dict) -> None:
    """Every expected split/cut is there with its duration, span, text and labels; nothing else; validate() passes."""
    assert set(expected) <= set(paths), paths
    for split, want in expected.items():
        cuts = {c.id: c for c in read_manifest(paths[split])}
        assert set(cuts) == set(want), split
        for cid, e in want.items():
            c = cuts[cid]
            assert os.path.isfile(c.audio), c.audio
            assert c.duration == pytest.approx(e["duration"], abs=2e-3), cid
            assert c.start == pytest.approx(e.get("start", 0.0), abs=1e-6), cid
            assert c.text == e["text"], cid
            for k, v in e.items():
                if k not in ("duration", "start", "text"):
                    assert c.labels.get(k) == v, (cid, k, c.labels)
        report = validate(paths[split], required_fields=(), max_duration=30.0)
        assert report.n_good == len(want) and not report.bad


def test_registry_and_docs():
    assert set(CORPORA) == set(CORPUS_DOCS) == set(FIXTURES) == {
        "librispeech", "commonvoice", "vctk", "cremad", "ravdess", "esc50", "vocalsound", "fsdd", "kaldi",
        "folder", "hf", "lhotse"}
    for name, fn in CORPORA.items():
        assert list(inspect.signature(fn).parameters)[:4] == ["src", "out", "workers", "progress"], name
        assert CORPUS_DOCS[name] and "\n" not in CORPUS_DOCS[name]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_recipe_on_its_fixture(name, tmp_path):
    src, expected = FIXTURES[name](tmp_path / "src")
    paths = run(name, src, tmp_path / "out")
    check(paths, expected)
    summary = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert summary["corpus"] == name and summary["rejected"] == 0
    assert not (tmp_path / "out" / "rejected.tsv").exists()


@pytest.mark.parametrize("name", ["librispeech", "commonvoice", "vctk", "cremad", "esc50", "vocalsound", "fsdd"])
def test_src_may_be_the_download_folder_above(name, tmp_path):
    """SRC can be where the archive was unpacked (the corpus folder's parent)."""
    src, expected = FIXTURES[name](tmp_path / "src")
    check(run(name, src.parent, tmp_path / "out"), expected)


def test_commonvoice_splits_and_quotes(tmp_path):
    src, _ = FIXTURES["commonvoice"](tmp_path / "src")
    paths = run("commonvoice", src, tmp_path / "out")
    assert set(paths) == {"train", "dev", "test", "validated"}  # not other/invalidated
    assert manifest_lines(paths["dev"]) == []
    assert manifest_lines(paths["train"])[0]["text"] == 'He said "hello" twice.'  # unquoted TSV


def test_vctk_both_mics(tmp_path):
    src, _ = FIXTURES["vctk"](tmp_path / "src")
    cuts = read_manifest(run("vctk", src, tmp_path / "out", mic=None)["all"])
    assert sorted(c.labels["mic"] for c in cuts) == ["mic1"] * 3 + ["mic2"] * 3


def test_hf_audio_is_16k_mono_wav_in_out(tmp_path):
    src, _ = FIXTURES["hf"](tmp_path / "src")
    out = tmp_path / "out"
    for path in run("hf", src, out).values():
        for line in manifest_lines(path):
            assert line["audio"].startswith("audio/")  # inside OUT: written relative, relocatable
        for c in read_manifest(path):
            assert audio_info(c.audio)[0::2] == (16000, 1)


def test_hf_parquet(tmp_path):
    src, expected = make_hf_parquet(tmp_path / "src")
    paths = run("hf", src, tmp_path / "out")
    assert set(paths) == {"train", "test"}
    check(paths, expected)


def test_rerun_is_safe_and_reuses_probes(tmp_path, monkeypatch):
    src, expected = FIXTURES["librispeech"](tmp_path / "src")
    out = tmp_path / "out"
    first = {k: p.read_bytes() for k, p in run("librispeech", src, out).items()}

    import speechlm.corpora._common as common

    def no_probe(path):
        raise AssertionError(f"header re-read on re-run: {path}")

    monkeypatch.setattr(common, "audio_info", no_probe)  # unchanged files come from .probe_cache.json
    again = run("librispeech", src, out)
    assert {k: p.read_bytes() for k, p in again.items()} == first
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temp files


def test_hf_rerun_skips_decoding(tmp_path, monkeypatch):
    src, expected = FIXTURES["hf"](tmp_path / "src")
    out = tmp_path / "out"
    first = {k: p.read_bytes() for k, p in run("hf", src, out).items()}
    import speechlm.corpora.hf as hf

    monkeypatch.setattr(hf, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert {k: p.read_bytes() for k, p in run("hf", src, out).items()} == first


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_bad_metadata_is_named_with_file_and_line(name, tmp_path):
    src, _ = FIXTURES[name](tmp_path / "src")
    bad_file, line = BAD_LINES[name](src)
    with pytest.raises(CorpusError) as e:
        run(name, src, tmp_path / "out")
    where = f"{bad_file}:{line}" if line else str(bad_file)
    assert where in str(e.value), str(e.value)
    assert not (tmp_path / "out" / "all.jsonl").exists()  # failed in stage 1, before writing anything


def test_kaldi_rejects_piped_wav_scp(tmp_path):
    src, _ = FIXTURES["kaldi"](tmp_path / "src")
    (src / "test" / "wav.scp").write_text("spkA-rec2 sox in.sph -t wav - |\n")
    with pytest.raises(CorpusError, match=r"test/wav.scp:1: .*piped command"):
        run("kaldi", src, tmp_path / "out")


def test_missing_audio_is_skipped_and_listed_or_strict(tmp_path):
    src, _ = FIXTURES["commonvoice"](tmp_path / "src")
    clip = next((src / "en" / "clips").glob("common_voice_en_2.*"))
    saved = clip.read_bytes()
    clip.unlink()
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=r"train.tsv:3: file not found"):
        run("commonvoice", src, out, strict=True)
    paths = run("commonvoice", src, out)
    assert [c["id"] for c in manifest_lines(paths["train"])] == ["common_voice_en_1"]
    rejected = (out / "rejected.tsv").read_text()
    assert "train.tsv:3" in rejected and "validated.tsv:3" in rejected
    clip.write_bytes(saved)  # fixed: the next run takes it back and drops the stale list
    paths = run("commonvoice", src, out)
    assert len(manifest_lines(paths["train"])) == 2 and not (out / "rejected.tsv").exists()


def test_lhotse_export_import_round_trip(tmp_path):
    import lhotse

    # Segments with offsets (kaldi), int/bool labels (esc50), and a stereo file (a MultiCut).
    src, _ = FIXTURES["kaldi"](tmp_path / "kaldi")
    cuts = read_manifest(run("kaldi", src, tmp_path / "k")["train"])
    src, _ = FIXTURES["esc50"](tmp_path / "esc")
    cuts += read_manifest(run("esc50", src, tmp_path / "e")["all"])
    import soundfile as sf

    sf.write(tmp_path / "stereo.wav", _signal(0.5, 16000, 440, channels=2), 16000)
    cuts.append(Cut(id="st", audio=str(tmp_path / "stereo.wav"), duration=0.5, text="two channels",
                    labels={"speaker": "s1", "gender": "male", "language": "en", "score": 3}))
    manifest = tmp_path / "mix.jsonl"
    write_manifest(manifest, cuts)

    exported = export_lhotse(manifest, tmp_path / "lh")
    assert exported.name == "mix_cuts.jsonl.gz"
    cutset = lhotse.load_manifest(exported)
    assert isinstance(cutset, lhotse.CutSet) and len(cutset) == len(cuts)
    lc = cutset["spkB-rec1-001"]
    assert lc.start == pytest.approx(0.5) and lc.supervisions[0].speaker == "spkB"
    assert lc.load_audio().shape[-1] == round(lc.duration * 16000)  # lhotse itself can read the audio
    assert cutset["st"].load_audio().shape[0] == 2

    back = read_manifest(run("lhotse", exported, tmp_path / "back")["mix"])
    assert [c.to_dict() for c in back] == [c.to_dict() for c in read_manifest(manifest)]


REAL = real_data_root()


@pytest.mark.skipif(REAL is None, reason="shared real data not found")
@pytest.mark.parametrize("name,part,step", [("ravdess", "ravdess", 90), ("fsdd", "fsdd", 225)])
def test_real_flat_layouts_match_shared_manifest(name, part, step, tmp_path):
    """The shared folder keeps RAVDESS and FSDD file names (flat): labels parsed from the names must
    equal the shared manifest's. (Its librispeech/ and events/ parts lack transcripts and metadata, so
    those recipes are only tested on fixtures.) Files are symlinked, never copied."""
    files = sorted((REAL / part).glob("*.flac"))[::step]
    if not files:
        pytest.skip(f"no {part}/ clips in {REAL}")
    src = tmp_path / part
    src.mkdir()
    for f in files:
        (src / f.name).symlink_to(f)
    shared = {}
    with open(REAL / "manifest.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if d["id"].startswith(part + "/"):
                shared[d["id"].split("/", 1)[1]] = d
    cuts = read_manifest(run(name, src, tmp_path / "out")["all"])
    assert len(cuts) == len(files)
    keys = ("speaker", "gender", "emotion", "emotion_intensity", "digit", "language")
    for c in cuts:
        ref = shared[c.id]
        assert c.text == ref["text"]
        assert c.duration == pytest.approx(ref["duration"], abs=0.01)
        for k in keys:
            if k in ref and (name != "fsdd" or k != "gender"):  # fsdd gender needs metadata.py, absent here
                assert c.labels.get(k) == ref[k], (c.id, k)

"""The discrete path's data side end to end, as a user runs it: a one-voice corpus -> ``speechlm prepare units`` ->
``speechlm prepare vocoder`` -> ``speechlm resynth`` (the ladder), through the CLI, with tiny budgets."""

from __future__ import annotations

import json
import shutil

import pytest

from speechlm.cli import main

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite (Debian package) is not installed")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_tokens")
    assert main(["prepare", "voice", str(root / "voice"), "--n", "8"]) == 0
    manifest = root / "voice" / "manifest.jsonl"
    assert main(["prepare", "units", str(manifest), str(root / "tok"), "--set", "units.k=12", "units.layer=2",
                 "units.acoustic_streams=2", "units.acoustic_k=8"]) == 0
    assert main(["prepare", "vocoder", str(manifest), str(root / "tok"), "--set", "vocoder.max_steps=6",
                 "vocoder.hidden=32", "vocoder.layers=1", "vocoder.threads=1", "vocoder.speaker_perturb=1"]) == 0
    return root / "tok", manifest


def test_prepare_units_writes_a_self_contained_folder(tokenizer_dir):
    tok, manifest = tokenizer_dir
    assert (tok / "tokenizer.json").exists() and (tok / "tokenizer.safetensors").exists()
    rows = [json.loads(line) for line in (tok / "units" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["text"] for r in rows)
    for r in rows:  # codec_ssl layout: frame-level units in stream 0, two acoustic streams beside them
        assert len(r["streams"]) == sum(r["durations"]) and len(r["streams"][0]) == 3
        assert [s[0] for s in r["streams"]] == r["units"] and max(r["units"]) < 12
    log = json.loads((tok / "prepare.json").read_text())
    assert log["units"]["fit_seconds"] > 0 and log["vocoder"]["clips"] == 8
    assert log["vocoder"]["re_voiced"] == 8  # vocoder.speaker_perturb=1: one re-voiced copy of each clip
    assert (tok / "vocoder" / "vocoder.json").exists()


def test_resynth_ladder_scores_every_rung(tokenizer_dir, tmp_path):
    tok, manifest = tokenizer_dir
    assert main(["resynth", str(tok), "--manifest", str(manifest), "--n", "2", "--samples", "1",
                 "--out", str(tmp_path / "ladder")]) == 0
    result = json.loads((tmp_path / "ladder" / "ladder.json").read_text())
    rungs = result["subsets"]["manifest"]
    assert set(rungs) == {"original", "copy-world", "copy-griffinlim", "units", "units+dur", "acoustic"}
    assert all(0.0 <= r["wer"] and r["n"] == 2 for r in rungs.values())
    assert rungs["copy-world"]["mcd_db"] < rungs["units+dur"]["mcd_db"]  # an untrained vocoder is far from the topline
    samples = tmp_path / "ladder" / "samples" / "manifest"
    assert (samples / "00.png").exists() and (samples / "00-units.wav").exists()
    assert "| manifest | copy-world |" in (tmp_path / "ladder" / "ladder.md").read_text()


def test_resynth_scores_only_the_chosen_rungs(tokenizer_dir, tmp_path):
    tok, manifest = tokenizer_dir
    assert main(["resynth", str(tok), "--manifest", str(manifest), "--n", "1", "--samples", "0", "--rungs",
                 "units,units+dur", "--out", str(tmp_path / "ladder")]) == 0
    rungs = json.loads((tmp_path / "ladder" / "ladder.json").read_text())["subsets"]["manifest"]
    assert set(rungs) == {"original", "units", "units+dur"}  # the original is always scored: the judge's floor
    assert main(["resynth", str(tok), "--manifest", str(manifest), "--rungs", "unit"]) == 2


def test_vocoder_from_another_tokenizer_is_refused(tokenizer_dir, tmp_path):
    from speechlm.inference.speech_tokens import load_speech_tokens

    tok, _ = tokenizer_dir
    other = tmp_path / "other"
    shutil.copytree(tok, other)
    meta = json.loads((other / "vocoder" / "vocoder.json").read_text())
    meta["tokenizer_hash"] = "0123456789abcdef"
    (other / "vocoder" / "vocoder.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="tokenizer_hash"):
        load_speech_tokens(other)


def test_prepare_vocoder_needs_a_tokenizer_folder(tmp_path, tokenizer_dir, capsys):
    _, manifest = tokenizer_dir
    assert main(["prepare", "vocoder", str(manifest), str(tmp_path)]) != 0
    assert f"{tmp_path / 'tokenizer.json'} not found" in capsys.readouterr().err

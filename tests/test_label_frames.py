"""Label frames (speechlm.model.label_frames): one probe per closed-set field on the pooled encoder output, its
posterior times the label words' embeddings in front of the audio frames; the loss against a hand computation,
the builder's checks, and a tiny run whose probes learn, are saved, reload, and keep the export out."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from speechlm.config import load_recipe
from speechlm.model.builders import speechlm_tiny
from speechlm.model.label_frames import LabelField, LabelFramesAdapter, LabelFramesHead
from speechlm.tasks import get_task
from speechlm.training.loop import train


class _Stack(nn.Module):
    """A stand-in inner adapter: every second frame, projected to H."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.proj = nn.Linear(d, h)

    def forward(self, frames, lengths):
        return self.proj(frames[:, ::2])

    def out_lengths(self, lengths):
        return (lengths + 1) // 2


def _adapter():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 6)
    fields = {"sgc": LabelField(((1,), (2, 3)), prefix=(9, 10), tags=((11,), (12, 13))),
              "ser": LabelField(((4,), (5,), (6, 7, 8)), prefix=(14,), tags=((15,), (16,), (17, 18)))}
    return LabelFramesAdapter(_Stack(4, 6), emb, fields, in_dim=4), emb


def test_tags_in_front_hold_the_probes_argmax_label():
    ad, emb = _adapter()
    frames, lengths = torch.randn(2, 6, 4), torch.tensor([6, 3])  # [B, F, D]
    with torch.no_grad():
        for h in ad.heads:
            h.weight.normal_()
            h.bias.normal_()
    out = ad(frames, lengths)  # [B, T + A, H]: "gender:" (2 tokens), label, "emotion:" (1), label, audio
    assert ad.tag_len == 5 and out.shape == (2, 5 + 3, 6) and ad.out_lengths(lengths).tolist() == [8, 7]
    e = emb.weight.detach()
    assert torch.allclose(out[:, :2], e[[9, 10]].expand(2, -1, -1)) and torch.allclose(out[:, 3], e[14].expand(2, -1))
    x = ad.pool(frames, lengths)
    assert torch.allclose(x[1], frames[1, :3].mean(0))  # clip 1: its 3 valid frames only
    k = int(ad.heads[1](x[1]).argmax())
    assert torch.allclose(out[1, 4], [e[15], e[16], e[[17, 18]].mean(0)][k], atol=1e-6)  # the argmax label's words
    assert torch.allclose(out[:, 5:], ad.inner(frames, lengths), atol=1e-6)  # the audio frames are the inner adapter's
    out[:, 4].sum().backward()  # straight-through: the label frame's gradient reaches the probe
    assert ad.heads[1].weight.grad is not None and float(ad.heads[1].weight.grad.abs().sum()) > 0


def test_probes_are_fitted_as_the_linear_probe():
    ad, _ = _adapter()
    torch.manual_seed(1)
    y = torch.arange(40) % 3  # [N] the emotion of each clip
    pooled = torch.randn(40, 4) * 0.1 + 5.0  # [N, D], a shared offset as the encoder's
    pooled[:, 0] += y * 1.0  # the label lives in one dimension
    sgc, ser = ad.candidates
    targets = [[(ser, int(i))] for i in y]
    assert ad.fit_probes(pooled, targets) == {"sgc": 0, "ser": 40}
    assert torch.allclose(ad.feat_shift, pooled.mean(0)) and torch.allclose(ad.feat_scale, 1 / pooled.std(0))
    ad(pooled[:, None, :], torch.ones(40, dtype=torch.long))  # one frame per clip: its pooled value
    assert float((ad.last_logits[1].argmax(-1) == y).float().mean()) > 0.9
    assert float(ad.heads[0].weight.abs().sum()) == 0  # no gender labels: that probe stays at zero
    with pytest.raises(ValueError, match="fitting the probes"):
        ad.fit_probes(torch.randn(1, 4), [[]])


def test_loss_is_cross_entropy_per_known_field_and_counts_right():
    ad, _ = _adapter()
    with torch.no_grad():
        for h in ad.heads:
            h.bias.normal_()
    head = LabelFramesHead(ad)
    assert list(head.parameters()) == []  # the probes are the adapter's
    with pytest.raises(RuntimeError, match="before a forward"):
        head(None, None, [[]])
    ad(torch.randn(2, 4, 4), torch.tensor([4, 4]))
    sgc, ser = ad.candidates
    targets = [[(sgc, 1), (ser, 2)], [(ser, 0), ((((9,), (10,))), 1)]]  # the last field has no probe: skipped
    total, n, right = head(None, None, targets)
    want = sum(float(nn.functional.cross_entropy(ad.last_logits[g][b][None].detach(), torch.tensor([i])))
               for g, b, i in ((0, 0, 1), (1, 0, 2), (1, 1, 0)))
    hits = sum(int(ad.last_logits[g][b].argmax()) == i for g, b, i in ((0, 0, 1), (1, 0, 2), (1, 1, 0)))
    assert n == 3 and right == hits and float(total) == pytest.approx(want, rel=1e-5)
    total.backward()
    assert ad.heads[0].bias.grad is not None
    empty, n0, _ = head(None, None, [[], []])
    assert n0 == 0 and float(empty) == 0.0 and empty.requires_grad


def test_builder_tokenizes_the_tasks_labels_and_refuses_clashes():
    model = speechlm_tiny(label_frames=["sgc", "ser"])
    assert isinstance(model.adapter, LabelFramesAdapter) and isinstance(model.label_head, LabelFramesHead)
    assert model.adapter.names == ["sgc", "ser"]
    assert [len(c) for c in model.adapter.candidates] == [len(get_task("sgc").labels), len(get_task("ser").labels)]
    assert model.adapter.candidates[0][1] == tuple(model.formatter.ctc_ids("female"))  # as the targets tokenize it
    assert model.adapter.fields[0].prefix == tuple(model.formatter.ctc_ids("gender:"))
    assert {"adapter.heads.0.weight", "adapter.heads.1.bias"} <= model.trainable_names
    with pytest.raises(ValueError, match="ctc_head"):
        speechlm_tiny(label_frames=["sgc"], ctc_head=True)
    with pytest.raises(ValueError, match="not a closed-set label task"):
        speechlm_tiny(label_frames=["asr"])
    with pytest.raises(ValueError, match="two tasks name the field 'gender'"):
        speechlm_tiny(label_frames=["sgc", "sgc"])


def test_probes_learn_in_a_label_stage_reload_and_block_export(tone_manifest, tmp_path):
    from speechlm.checkpoint import load_checkpoint
    from speechlm.export.hf import ExportError, check_checkpoint

    lines = [json.loads(x) for x in tone_manifest.read_text().splitlines()]
    for i, d in enumerate(lines):  # gender is a function of the tone's pitch: learnable from the pooled frames
        d["gender"] = "female" if i % 6 >= 3 else "male"
    manifest = tone_manifest.with_name("labelled.jsonl")
    manifest.write_text("".join(json.dumps(d) + "\n" for d in lines))
    stages = ('[{"steps": 3, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "label": 1}, '
              '{"steps": 2, "tasks": ["asr", "sgc"], "label": 1}]')
    out = tmp_path / "run"
    train(load_recipe("tiny", [f"data.train_manifest={manifest}", f"data.val_manifest={manifest}",
                               "model.label_frames=[sgc]", "train.max_steps=5", "train.save_every=5",
                               "train.log_every=1", f"train.stages={stages}", f"train.out_dir={out}"]),
          progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    tr = [r for r in log if r["split"] == "train"]
    assert tr[0]["label_acc"] >= 0.75  # fitted before the first step, by L-BFGS on the training clips
    assert [r["label_acc"] for r in log if r["split"] == "val"][-1] >= 0.9
    assert all(r["stage"] == 1 and r["loss"] > r["label_loss"] for r in tr[3:])  # the LM trains beside the probes
    model, _, _ = load_checkpoint(out / "checkpoints" / "step-000005")
    assert float(model.adapter.feat_scale.sub(1).abs().sum()) > 0  # the standardiser, fitted from data, was saved
    assert isinstance(model.adapter, LabelFramesAdapter)
    trained = {k: v for k, v in model.adapter.state_dict().items() if k.startswith("heads.")}
    assert any(float(v.abs().sum()) > 0 for v in trained.values())  # loaded, not the zero init
    with pytest.raises(ExportError, match="label_frames"):
        check_checkpoint(out / "checkpoints" / "step-000005")

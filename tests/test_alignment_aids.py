"""What helps the adapter hear open speech (issue 9): the `stack-tf` adapter, SpecAugment on cached frames, and the
pseudo-labelled real clips of the demo."""

from __future__ import annotations

import json

import pytest
import torch

from speechlm.config import load_recipe
from speechlm.model.adapter import ADAPTERS, StackTransformer
from speechlm.training.dataset import mask_frames


def test_stack_tf_output_of_a_clip_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    m = StackTransformer(16, 24, k=4, hidden=32, width=32, heads=4).eval()
    x = torch.randn(3, 37, 16)  # [B, F, D]
    lengths = torch.tensor([37, 21, 5])
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0
    y = m(x, lengths)  # [B, A, H]
    assert y.shape == (3, 10, 24)
    assert m.out_lengths(lengths).tolist() == [10, 6, 2]
    for i, n in enumerate(lengths.tolist()):
        alone = m(x[i:i + 1, :n], lengths[i:i + 1])
        a = int(m.out_lengths(lengths[i:i + 1]))
        torch.testing.assert_close(y[i, :a], alone[0, :a], atol=1e-5, rtol=1e-5)
    assert ADAPTERS["stack-tf"] is StackTransformer


def test_stack_tf_builds_trains_and_reloads(tone_manifest, tmp_path):
    from speechlm.checkpoint import load_checkpoint
    from speechlm.inference.transcribe import CTCTranscriber
    from speechlm.training.loop import train

    run = tmp_path / "r"
    train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "model.adapter=stack-tf", "model.ctc_head=true",
                               "model.adapter_out_norm=true", "train.ctc_weight=0.3", "train.max_steps=2",
                               f"train.out_dir={run}"]), progress=False)
    model, cfg, _ = load_checkpoint(run)
    assert isinstance(model.adapter, StackTransformer) and cfg.model.adapter == "stack-tf"
    assert len(CTCTranscriber(model)([torch.randn(8000)])) == 1


def test_mask_frames_is_deterministic_covers_the_share_and_leaves_the_input():
    frames = torch.ones(500, 64)  # [F, D]
    a = mask_frames(frames, 0.1, "0:0:clip")
    b = mask_frames(frames, 0.1, "0:0:clip")
    c = mask_frames(frames, 0.1, "0:1:clip")  # another epoch: other masks
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(frames, torch.ones(500, 64))  # the cached tensor is not modified
    time_masked = (a == 0).all(dim=1).float().mean().item()
    assert 0.04 <= time_masked <= 0.2  # overlapping masks may cover a little less than the budget
    channel_masked = (a == 0).all(dim=0).sum().item()
    assert 2 <= channel_masked <= 54
    assert mask_frames(frames, 0.0, "k") is frames


def test_frame_mask_is_a_recipe_field_and_pseudo_labels_a_demo_field():
    cfg = load_recipe("tiny", ["data.frame_mask=0.1", "demo.pseudo_label=true"])
    assert cfg.data.frame_mask == 0.1 and cfg.demo.pseudo_label
    shipped = load_recipe("demo")
    assert shipped.demo.pseudo_label


def test_demo_pseudo_labels_only_the_untranscribed_librispeech_clips(tmp_path, monkeypatch):
    """The demo's call: clips with text and other sources are left alone; the labels are marked as pseudo."""
    from speechlm.corpora.pseudo_label import pseudo_label_manifest
    from tests.factories import make_manifest

    m = make_manifest(tmp_path / "m", n=4)
    lines = [json.loads(x) for x in m.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["id"] = ("librispeech/" if i < 2 else "other/") + line["id"]
        line["language"] = "en"
        if i in (1, 3):
            line.pop("text", None)
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = pseudo_label_manifest(m, tmp_path / "pseudo.jsonl", id_prefix="librispeech/",
                                transcribe=lambda waves: ["chapter 17 it began"] * len(waves), label="stand-in", progress=False)
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["id"] for g in got] == [lines[1]["id"]]
    assert got[0]["text"] == "chapter seventeen it began" and got[0]["text_source"] == "pseudo:stand-in"


def test_frame_mask_trains_from_cached_frames_and_resumes_exactly(tone_manifest, tmp_path):
    from speechlm.model.builders import speechlm_tiny
    from speechlm.model.features import cache_features
    from speechlm.training.loop import train

    torch.manual_seed(0)
    feats = cache_features(tone_manifest, speechlm_tiny().encoder, tmp_path / "feats", progress=False)
    common = [f"data.train_manifest={feats}", "data.frame_mask=0.2", "model.ctc_head=true", "train.ctc_weight=0.3",
              "train.max_steps=4", "train.save_every=2", "train.log_every=1", "data.max_batch=4"]
    full = tmp_path / "full"
    train(load_recipe("tiny", common + [f"train.out_dir={full}"]), progress=False)
    log = {r["step"]: r["loss"] for r in map(json.loads, (full / "train_log.jsonl").read_text().splitlines())}
    run = tmp_path / "resumed"
    train(load_recipe("tiny", common + [f"train.out_dir={run}"]), resume=str(full / "checkpoints" / "step-000002"),
          progress=False)
    got = {r["step"]: r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())}
    assert set(got) == {3, 4} and all(abs(got[s] - log[s]) < 1e-5 for s in got)
    # unmasked training differs: the masks are really applied
    plain = tmp_path / "plain"
    train(load_recipe("tiny", [c for c in common if not c.startswith("data.frame_mask")] + [f"train.out_dir={plain}"]), progress=False)
    first = json.loads((plain / "train_log.jsonl").read_text().splitlines()[0])
    assert abs(first["loss"] - log[1]) > 1e-6
    with pytest.raises(ValueError, match="data.frame_mask masks cached encoder frames"):
        train(load_recipe("tiny", [f"data.train_manifest={tone_manifest}", "data.frame_mask=0.1", "train.max_steps=1",
                                   f"train.out_dir={tmp_path / 'x'}"]), progress=False)

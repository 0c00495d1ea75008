"""Checkpoint I/O without pickle, and the CLI read from source.

* training state (optimizer, scheduler, RNG, sampler) round-trips through safetensors + JSON exactly;
* resume works with ``torch.load`` forbidden, so no code path loads a pickle;
* a checkpoint with a legacy pickled ``state.pt`` is refused with a message, and a missing file is named;
* the parser built from the verbs' source matches ``inspect.signature`` of the imported functions.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random

import numpy as np
import pytest
import torch

from speechlm.checkpoint import CheckpointError, check_layout, load_training_state
from speechlm.checkpoint.state import STATE_JSON, StateError, load_state, save_state
from speechlm.cli import VERBS, build_parser
from speechlm.config import load_recipe
from speechlm.introspect import EMPTY, read_registry, read_signature
from speechlm.training.loop import rng_state, train


def _same(a, b, path="state"):
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, path


def test_training_state_round_trips_exactly_without_pickle(tmp_path):
    w = torch.nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.AdamW([w], lr=1e-3, betas=(0.9, 0.95))
    w.grad = torch.randn(3, 4)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    random.seed(3); np.random.seed(3); torch.manual_seed(3)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(), "step": 7,
             "sampler": {"epoch": 1, "position": 5, "order": [3, 1, 2]}, "odd": {"nan": float("nan"), "inf": float("-inf"),
             "bf16": torch.ones(2, dtype=torch.bfloat16), "none": None, 0: "int key"}}
    save_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.safetensors"]
    back = load_state(tmp_path)
    _same(state, back)
    # the restored state drives the same objects: optimizer and RNG continue identically
    opt2 = torch.optim.AdamW([torch.nn.Parameter(w.detach().clone())], lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)
    from speechlm.training.loop import set_rng_state

    set_rng_state(back["rng"])
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state["rng"])
    assert a == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_state_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(StateError, match=r"state\.sampler\.fn: cannot store a function"):
        save_state(tmp_path, {"sampler": {"fn": lambda: 0}})
    save_state(tmp_path, {"a": 1})
    doc = json.loads((tmp_path / STATE_JSON).read_text())
    doc["format"] = "other/9"
    (tmp_path / STATE_JSON).write_text(json.dumps(doc))
    with pytest.raises(StateError, match="field 'format'"):
        load_state(tmp_path)


def test_resume_never_loads_a_pickle_and_legacy_state_is_refused(tone_manifest, tmp_path, monkeypatch):
    cfg = lambda out, *x: load_recipe("tiny", [f"data.train_manifest={tone_manifest}", f"train.out_dir={out}", *x])  # noqa: E731
    run = tmp_path / "run"
    train(cfg(run, "train.max_steps=2", "train.save_every=1"), progress=False)

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called: a checkpoint must not hold a pickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    final = train(cfg(run, "train.max_steps=3", "train.save_every=1"), resume="auto", progress=False)
    assert final.name == "step-000003" and not list(run.rglob("*.pt"))
    # a checkpoint made before this format: its weights still load for inference, resuming says why it cannot
    old = run / "checkpoints" / "step-000002"
    (old / "state.json").unlink()
    (old / "state.safetensors").rename(old / "state.pt")
    with pytest.raises(StateError, match="pickle"):
        load_training_state(old)
    (old / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        check_layout(old)


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_cli_signature_read_from_source_matches_the_function(verb):
    module, function = VERBS[verb]
    fn = getattr(importlib.import_module(module), function)
    sig = read_signature(module, function)
    real = inspect.signature(fn).parameters
    assert [p.name for p in sig.params] == list(real)
    for p in sig.params:
        default = real[p.name].default
        assert (p.default is EMPTY) == (default is inspect.Parameter.empty), p.name
        if p.default is not EMPTY:
            assert p.default == default, p.name
    assert sig.doc == inspect.getdoc(fn)
    assert tuple(getattr(fn, "cli_positional", ())) == sig.positional


def test_registries_read_from_source_match_the_imported_dicts():
    from speechlm.backbones.llm import LLMS
    from speechlm.model.adapter import ADAPTERS
    from speechlm.model.builders import ENCODERS, SIZES

    assert read_registry("speechlm.backbones.llm", "LLMS") == LLMS
    assert read_registry("speechlm.model.builders", "ENCODERS") == ENCODERS
    adapters = read_registry("speechlm.model.adapter", "ADAPTERS")
    assert adapters == {k: inspect.getdoc(v).splitlines()[0] for k, v in ADAPTERS.items()}
    assert set(read_registry("speechlm.model.builders", "SIZES")) == set(SIZES)


def test_parser_builds_every_verb():
    args = build_parser().parse_args(["train", "--recipe", "tiny", "--max-steps", "3", "--set", "a.b=1", "c.d=2"])
    assert args.verb == "train" and args.max_steps == 3 and args.set == ["a.b=1", "c.d=2"]
    args = build_parser().parse_args(["ls", "tasks"])
    assert args.what == "tasks"


def test_option_help_keeps_continuation_lines():
    from speechlm.cli import _param_help

    doc = "Summary.\n\nn: clips per set,\n    sampled with the seed.\nrungs: which rungs\nto score.\n\nNotes after a blank line."
    assert _param_help(doc) == {"n": "clips per set, sampled with the seed.", "rungs": "which rungs to score."}
    rungs = [a for a in build_parser()._subparsers._group_actions[0].choices["resynth"]._actions if a.dest == "rungs"][0]
    assert rungs.help.endswith("units+dur, acoustic.")

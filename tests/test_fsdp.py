"""FSDP2 sharded training and elastic checkpoints at tiny size, on CPU processes (gloo): 2 processes reproduce 1;
a run saved with 2 processes resumes with 1 and one saved with 1 resumes with 2; resume is exact with the world
size unchanged; the checkpoint folder still serves inference and holds no pickle; the discrete trainer shards
too. The continuous runs use a CTC-first stage table, so a stage that freezes LoRA (no optimizer state yet when
saved), a 0-dim parameter FSDP cannot shard and the CTC head are all on the path.

World-1 runs train in this process (FSDP gets a one-rank group on an in-memory store); 2-process runs go through
torchrun, as a user would start them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechlm.checkpoint import load_checkpoint
from speechlm.config import load_recipe

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on linux")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
STAGES = ('train.stages=[{"steps": 2, "tasks": ["asr"], "trainable": "adapter", "lm": 0, "ctc": 1}, '
          '{"steps": 2, "tasks": ["asr"], "ctc": 0.3}]')
SETTINGS = ["train.strategy=fsdp", "train.log_every=1", "train.save_every=1", "train.max_steps=4", "data.max_batch=4",
            "data.max_seconds_per_batch=8", "model.ctc_head=true", "model.adapter_out_norm=true",
            "train.stage_schedule=true", STAGES]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (conftest.one_thread)."""


def _losses(run: Path) -> dict[int, float]:
    """Train losses by step; a resumed run's lines come after the ones it replaces."""
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
            if r["split"] == "train"}


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / f"step-{step:06d}" / "trainable.safetensors"))


def _same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=atol, rtol=0, msg=k)


def _train_here(manifest: Path, out: Path, *extra: str, resume: str = "") -> Path:
    from speechlm.training.loop import train

    cfg = load_recipe("tiny", [f"data.train_manifest={manifest}", f"train.out_dir={out}", *SETTINGS, *extra])
    train(cfg, resume=resume or None, progress=False)
    return out


def _torchrun(*args: str, nproc: int = 2) -> None:
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                           "-m", "speechlm.cli", *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _train_two(manifest: Path, out: Path, resume: str = "") -> Path:
    _torchrun("train", "--recipe", "tiny", "--train-manifest", str(manifest), "--out-dir", str(out),
              *(["--resume", resume] if resume else []), "--set", *SETTINGS)
    return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from factories import make_manifest

    return make_manifest(tmp_path_factory.mktemp("fsdp_data"), n=12, min_seconds=0.5, max_seconds=1.5)


@pytest.fixture(scope="module")
def runs(manifest, tmp_path_factory) -> dict[str, Path]:
    """The same 4 steps as 1 process (here) and as 2 (torchrun), checkpointed after every step."""
    root = tmp_path_factory.mktemp("fsdp_runs")
    torch.set_num_threads(1)
    return {"one": _train_here(manifest, root / "one"), "two": _train_two(manifest, root / "two")}


def test_two_processes_match_one(runs):
    one, two = _losses(runs["one"]), _losses(runs["two"])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
    _same_weights(_weights(runs["one"], 4), _weights(runs["two"], 4), atol=1e-5)
    # stage 1 trains the adapter and the CTC head only: LoRA is untouched until stage 2
    w0, w2, w3 = _weights(runs["two"], 1), _weights(runs["two"], 2), _weights(runs["two"], 3)
    lora = [k for k in w0 if "lora_" in k]
    assert lora and all(torch.equal(w0[k], w2[k]) for k in lora)
    assert any(not torch.equal(w2[k], w3[k]) for k in lora)
    assert not torch.equal(w0["ctc.log_scale"], w2["ctc.log_scale"])  # the 0-dim parameter FSDP leaves whole trains


def test_checkpoint_serves_inference_and_holds_no_pickle(runs):
    from speechlm.checkpoint.state import load_state

    ckpt = runs["two"] / "checkpoints" / "step-000004"
    assert (runs["two"] / "checkpoints" / "latest").read_text().strip() == "step-000004"
    shards = sorted(p.name for p in (ckpt / "sharded").iterdir())
    assert len(shards) == 2 and all(n.endswith(".safetensors") for n in shards)  # one per rank, no .metadata pickle
    files = [p for p in ckpt.rglob("*") if p.is_file()]
    assert not [p for p in files if p.read_bytes()[:2] == b"PK"], "a torch.save (zip/pickle) file in the checkpoint"
    state = load_state(ckpt)
    assert set(state["optimizer"]) == {"param_groups"} and state["step"] == 4 and state["stage"] == 1
    assert not [p for p in (runs["two"] / "checkpoints").iterdir() if p.name.startswith(".")], "staging folders left"
    model, cfg, _ = load_checkpoint(runs["two"])  # the folder alone: the gathered trainable.safetensors
    assert cfg.train.strategy == "fsdp" and model.ctc is not None


def _continues(ref_run, out, steps, loss_tol, weight_tol):
    """The resumed run logs exactly ``steps``, each loss within ``loss_tol`` of the reference run's, and ends with
    its weights (within ``weight_tol``)."""
    ref, got = _losses(ref_run), _losses(out)
    assert sorted(got) == steps
    for step in got:
        assert abs(ref[step] - got[step]) < loss_tol, (step, ref[step], got[step])
    _same_weights(_weights(ref_run, 4), _weights(out, 4), atol=weight_tol)


def test_saved_with_two_resumes_with_one(runs, manifest, tmp_path):
    """From step 1 (stage 1: LoRA has no optimizer state yet) across the stage boundary to step 4."""
    out = _train_here(manifest, tmp_path / "two_to_one", resume=str(runs["two"] / "checkpoints" / "step-000001"))
    _continues(runs["two"], out, [2, 3, 4], loss_tol=1e-4, weight_tol=1e-5)


def test_saved_with_one_resumes_with_two(runs, manifest, tmp_path):
    out = _train_two(manifest, tmp_path / "one_to_two", resume=str(runs["one"] / "checkpoints" / "step-000001"))
    _continues(runs["one"], out, [2, 3, 4], loss_tol=1e-4, weight_tol=1e-5)


def test_resume_with_the_same_world_size_is_exact(runs, manifest, tmp_path):
    out = _train_here(manifest, tmp_path / "again", resume=str(runs["one"] / "checkpoints" / "step-000002"))
    _continues(runs["one"], out, [3, 4], loss_tol=1e-6, weight_tol=1e-6)


def test_a_crashed_save_is_never_latest(runs, tmp_path):
    """Every rank writes into a staging folder; only its rename publishes it, and only then does latest move."""
    import shutil

    from speechlm.checkpoint import resolve_checkpoint
    from speechlm.checkpoint.folder import prepare_staging, publish_checkpoint

    run = tmp_path / "run"
    shutil.copytree(runs["one"] / "checkpoints" / "step-000002", run / "checkpoints" / "step-000002")
    (run / "checkpoints" / "latest").write_text("step-000002\n")
    staging = prepare_staging(run, 3)
    (staging / "sharded").mkdir()
    (staging / "sharded" / "shard-00001-model-00001-of-00001.safetensors").write_bytes(b"half written")
    # the process dies here: nothing names the staging folder
    assert resolve_checkpoint(run).name == "step-000002"
    staging = prepare_staging(run, 3)  # the next attempt at step 3 starts from an empty folder
    assert list(staging.iterdir()) == []
    shutil.copytree(run / "checkpoints" / "step-000002", staging, dirs_exist_ok=True)
    assert publish_checkpoint(staging, run, 3).name == "step-000003" and resolve_checkpoint(run).name == "step-000003"
    assert not staging.exists()


def test_elastic_sampler_keeps_the_saved_epoch_plan():
    """Saved with 1 rank mid-epoch, resumed with 2: the rest of the epoch is the same global batches (a batch the
    1-rank plan kept with a single cut gives rank 1 an empty share); the next epoch is planned for 2."""
    from speechlm.data.sampler import DurationBatchSampler

    d = [0.5, 0.6, 0.7, 9.0, 0.8, 0.9, 1.0, 1.1, 9.5, 1.2]  # two long clips: batches of one cut at budget 10
    one = DurationBatchSampler(d, max_seconds=10.0, seed=3)
    plan = one.global_batches()
    assert any(len(b) < 2 for b in plan)
    next(iter(one))
    state = json.loads(json.dumps(one.state_dict(consumed=1)))
    ranks = [DurationBatchSampler(d, max_seconds=10.0, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.load_state_dict(state)
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == len(plan) - 1  # the ranks step together
    rebuilt = [sorted(a + b) for a, b in zip(*shares)]
    assert rebuilt == [sorted(b) for b in plan[1:]]
    assert any(not a or not b for a, b in zip(*shares)) == any(len(b) < 2 for b in plan[1:])
    assert all(len(b) >= 2 for b in ranks[0].global_batches())  # the next epoch: planned for 2 ranks


def test_activation_checkpointing_and_compile_keep_the_gradients():
    """train.activation_checkpointing and train.compile (eager backend: tracing only, fast on a CPU) are wired to
    the decoder layers and change no gradient."""
    from speechlm.backbones.llm import build_tiny_llm
    from speechlm.training.distributed import decoder_layers, prepare_layers

    def grads(**options) -> dict[str, torch.Tensor]:
        llm, _ = build_tiny_llm("llama", seed=0)
        llm.train()
        prepare_layers(decoder_layers(llm), **options)
        ids = torch.arange(3, 40).view(1, -1)
        llm(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in llm.named_parameters() if p.grad is not None}

    ref = grads()
    for options in ({"activation_checkpointing": True}, {"compile": True, "compile_backend": "eager"}):
        got = grads(**options)
        assert got.keys() == ref.keys(), options
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5, msg=f"{options} {k}")
    llm, _ = build_tiny_llm("llama", seed=0)
    layers = decoder_layers(llm)
    prepare_layers(layers, activation_checkpointing=True, compile=True, compile_backend="eager")
    assert all(getattr(layer, "gradient_checkpointing", False) for layer in layers)
    assert all(layer._compiled_call_impl is not None for layer in layers)


# ---- the discrete trainer --------------------------------------------------------------------------
DISCRETE = ["discrete.llm=tiny-llama", "discrete.batch_size=4", "discrete.lora_r=4", "discrete.lora_alpha=8",
            "discrete.lora_dropout=0", "train.strategy=fsdp", "train.log_every=1", "train.save_every=2",
            "train.warmup_steps=1", "train.max_minutes=0", "train.max_steps=3",
            "discrete.stages=[{steps: 3, tasks: [asr, tts]}]"]


def test_discrete_trainer_two_processes_match_one_and_resume_with_one(manifest, tmp_path):
    """units from a tiny random encoder; 2 processes (torchrun) == 1 (here); the 2-process step-2 checkpoint
    resumed by 1 process ends where both did."""
    from speechlm.cli import main
    from speechlm.training.discrete import train_discrete

    tok = tmp_path / "tok"
    assert main(["prepare", "units", str(manifest), str(tok), "--set", "units.encoder=tiny-whisper", "units.k=8",
                 "units.layer=1"]) == 0
    settings = [f"discrete.tokenizer={tok}", *DISCRETE]

    def here(out: Path, resume: str = "") -> Path:
        cfg = load_recipe("speechgpt-tiny", [f"data.train_manifest={manifest}", f"train.out_dir={out}", *settings])
        train_discrete(cfg, resume=resume or None, progress=False)
        return out

    one = here(tmp_path / "one")
    two = tmp_path / "two"
    _torchrun("train", "--recipe", "speechgpt-tiny", "--train-manifest", str(manifest), "--out-dir", str(two),
              "--set", *settings)
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-4, (step, a[step], b[step])
    _same_weights(_weights(one, 3), _weights(two, 3), atol=1e-5)
    assert len(list((two / "checkpoints" / "step-000002" / "sharded").iterdir())) == 2
    resumed = here(tmp_path / "resumed", resume=str(two / "checkpoints" / "step-000002"))
    assert sorted(_losses(resumed)) == [3]
    assert abs(_losses(resumed)[3] - a[3]) < 1e-4
    _same_weights(_weights(one, 3), _weights(resumed, 3), atol=1e-5)

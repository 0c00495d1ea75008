"""Multi-task data: eligibility by field, sampling weights and temperature, invalid labels, training."""

from __future__ import annotations

import json

import pytest

from speechlm.checkpoint.state import load_state
from speechlm.config import load_recipe
from speechlm.data.manifest import Cut, ManifestError
from speechlm.tasks.mixture import build_mixture, parse_task_weights, task_probabilities
from speechlm.training.loop import train


def _cuts(n_gender: int = 6, n_text_only: int = 4) -> list[Cut]:
    cuts = [Cut(id=f"g{i}", audio="/x.wav", duration=1.0, text="hello", labels={"gender": "male" if i % 2 else "female"},
                source=f"m.jsonl:{i + 1}") for i in range(n_gender)]
    return cuts + [Cut(id=f"t{i}", audio="/x.wav", duration=1.0, text="world", source=f"m.jsonl:{n_gender + i + 1}")
                   for i in range(n_text_only)]


def test_probabilities_follow_weights_and_temperature():
    sizes = {"asr": 900, "sgc": 100}
    p1 = task_probabilities(sizes, {"asr": 1, "sgc": 1}, 1.0)
    assert p1["asr"] == pytest.approx(0.9)
    p_flat = task_probabilities(sizes, {"asr": 1, "sgc": 1}, 1e6)
    assert p_flat["asr"] == pytest.approx(0.5, abs=1e-3)
    p_w = task_probabilities(sizes, {"asr": 1, "sgc": 9}, 1.0)
    assert p_w["sgc"] == pytest.approx(0.5)
    p2 = task_probabilities(sizes, {"asr": 1, "sgc": 1}, 2.0)
    assert p2["sgc"] == pytest.approx(100 ** 0.5 / (900 ** 0.5 + 100 ** 0.5))
    with pytest.raises(ValueError, match="temperature"):
        task_probabilities(sizes, {"asr": 1, "sgc": 1}, 0)


def test_mixture_uses_lines_that_carry_each_field():
    cuts = _cuts()
    ex_cuts, ex_tasks, report = build_mixture(cuts, parse_task_weights(["asr", "sgc:1"]), seed=0)
    assert report["eligible"] == {"asr": 10, "sgc": 6}
    assert len(ex_cuts) == len(ex_tasks) == sum(report["examples"].values())
    assert all("gender" in c.labels for c, t in zip(ex_cuts, ex_tasks) if t.name == "sgc")
    again = build_mixture(cuts, parse_task_weights(["asr", "sgc:1"]), seed=0)
    assert [c.id for c in again[0]] == [c.id for c in ex_cuts], "deterministic given the seed"


def test_mixture_errors_name_line_field_and_task():
    cuts = _cuts()
    cuts[2].labels["gender"] = "robot"
    with pytest.raises(ManifestError, match=r"m.jsonl:3: field 'gender'"):
        build_mixture(cuts, parse_task_weights(["sgc"]))
    with pytest.raises(ManifestError, match="ser .field 'emotion'"):
        build_mixture(_cuts(), parse_task_weights(["ser"]))
    with pytest.raises(KeyError, match="registered tasks"):
        parse_task_weights(["nope"])
    with pytest.raises(ValueError, match="name:weight"):
        parse_task_weights(["ser:lots"])


def test_multitask_training_runs_and_reports_tasks(tone_manifest, tmp_path):
    # speaker labels s0/s1 -> gender, so the tone clips serve asr and sgc
    lines = [json.loads(line) for line in tone_manifest.read_text().splitlines()]
    for d in lines:
        d["gender"] = "male" if d["speaker"] == "s0" else "female"
    manifest = tone_manifest.parent / "mt.jsonl"
    manifest.write_text("".join(json.dumps(d) + "\n" for d in lines))
    run = tmp_path / "run"
    cfg = load_recipe("tiny", [f"data.train_manifest={manifest}", f"train.out_dir={run}", "train.max_steps=3",
                               "data.tasks=asr,sgc:2", "data.temperature=2"])
    train(cfg, progress=False)
    report = json.loads((run / "data_report.json").read_text())["tasks"]
    assert report["eligible"] == {"asr": 12, "sgc": 12} and report["examples"]["sgc"] > report["examples"]["asr"]


def _gender_manifest(tone_manifest):
    lines = [json.loads(line) for line in tone_manifest.read_text().splitlines()]
    for d in lines:
        d["gender"] = "male" if d["speaker"] == "s0" else "female"
    manifest = tone_manifest.parent / "mt.jsonl"
    manifest.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return manifest


STAGES = '[{"steps": 3, "tasks": ["asr"], "trainable": "adapter"}, {"steps": 4, "tasks": ["asr", "sgc:2"], "trainable": "adapter+lora"}]'


def _losses(run):
    return {r["step"]: r for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if r["split"] == "train"}


def test_curriculum_stages_switch_tasks_and_trainable_parts_and_resume_exactly(tone_manifest, tmp_path):
    from safetensors.torch import load_file

    manifest = _gender_manifest(tone_manifest)
    full = tmp_path / "full"
    common = [f"data.train_manifest={manifest}", "train.max_steps=7", "train.save_every=2", "train.log_every=1", f"train.stages={STAGES}"]
    train(load_recipe("tiny", common + [f"train.out_dir={full}"]), progress=False)
    log = _losses(full)
    assert [log[s]["stage"] for s in range(1, 8)] == [0, 0, 0, 1, 1, 1, 1]
    # stage 1 trains the adapter only: LoRA weights at step 2 are still their initial values (B = 0)
    w2 = load_file(str(full / "checkpoints" / "step-000002" / "trainable.safetensors"))
    lora_b = [k for k in w2 if "lora_B" in k]
    assert lora_b and all(float(w2[k].abs().max()) == 0.0 for k in lora_b)
    w6 = load_file(str(full / "checkpoints" / "step-000006" / "trainable.safetensors"))
    assert any(float(w6[k].abs().max()) > 0 for k in lora_b)
    assert load_state(full / "checkpoints" / "step-000004")["stage"] == 1
    # resume inside stage 1 and across the stage boundary: the same losses as the uninterrupted run
    for ckpt in ("step-000002", "step-000004"):
        run = tmp_path / f"resume-{ckpt}"
        train(load_recipe("tiny", common + [f"train.out_dir={run}"]), resume=str(full / "checkpoints" / ckpt), progress=False)
        for step, rec in _losses(run).items():
            assert abs(rec["loss"] - log[step]["loss"]) < 1e-5, (ckpt, step)
    # a checkpoint at the stage boundary (step 3, off the save_every grid), and stop_at_step: the same
    # schedule cut short, as the single-task ASR control uses it
    assert (full / "checkpoints" / "step-000003").exists()
    cut = tmp_path / "cut"
    train(load_recipe("tiny", common + [f"train.out_dir={cut}", "train.stop_at_step=5"]), progress=False)
    assert (cut / "checkpoints" / "latest").read_text().strip() == "step-000005"
    got = _losses(cut)
    assert sorted(got) == [1, 2, 3, 4, 5] and all(abs(got[s]["loss"] - log[s]["loss"]) < 1e-5 for s in got)


@pytest.mark.parametrize("stages,needle", [
    ('[{"steps": 3, "tasks": ["asr"]}]', "add up to 3, but train.max_steps is 7"),
    ('[{"steps": 7, "tasks": ["nope"]}]', r"train.stages\[0\].tasks"),
    ('[{"steps": 7, "tasks": ["asr"], "trainable": "adapter+llm"}]', r"train.stages\[0\].trainable"),
    ('[{"steps": 0, "tasks": ["asr"]}]', r"train.stages\[0\].steps"),
    ('[{"steps": 7, "tasks": ["asr"], "lr": 1}]', "unknown key"),
])
def test_bad_stage_tables_are_named(tone_manifest, tmp_path, stages, needle):
    cfg = load_recipe("tiny", [f"data.train_manifest={tone_manifest}", f"train.out_dir={tmp_path / 'r'}", "train.max_steps=7",
                               f"train.stages={stages}"])
    with pytest.raises(ValueError, match=needle):
        train(cfg, progress=False)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_per_task_eval_report_with_baselines(tone_manifest, tmp_path):
    from speechlm.cli import main

    manifest = _gender_manifest(tone_manifest)
    run = tmp_path / "run"
    train(load_recipe("tiny", [f"data.train_manifest={manifest}", f"train.out_dir={run}", "train.max_steps=2",
                               "data.tasks=asr,sgc"]), progress=False)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run), "--manifest", str(manifest), "--out", str(out), "--tasks", "all",
                 "--train-manifest", str(manifest)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"asr", "sgc"}
    sgc = summary["sgc"]
    assert {"seen instructions", "held-out instructions", "constrained", "majority", "linear probe"} <= set(sgc)
    assert 0.0 <= sgc["constrained"] <= 1.0 and sgc["n"] == 12
    assert (out / "confusion_sgc.png").stat().st_size > 0
    assert "held-out instructions" in (out / "report.md").read_text()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["hyp"] for r in rows if r["task"] == "sgc" and r["system"] == "constrained"} <= {"male", "female"}


def test_multitask_end_to_end_through_the_cli(tmp_path):
    """prepare multitask -> train with the tiny-mt stage table -> eval --tasks all."""
    from speechlm.cli import main
    from speechlm.corpora.synth import available_voices

    try:
        available_voices()
    except RuntimeError:
        pytest.skip("espeak-ng/flite not installed")
    assert main(["prepare", "multitask", str(tmp_path / "mt"), "--n", "8"]) == 0
    manifest = tmp_path / "mt" / "manifest.jsonl"
    run = tmp_path / "run"
    assert main(["train", "--recipe", "tiny-mt", "--train-manifest", str(manifest), "--out-dir", str(run)]) == 0
    assert [r["stage"] for r in _losses(run).values()] == [0, 0, 1, 1, 1, 1]
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run), "--manifest", str(manifest), "--out", str(out), "--tasks", "all",
                 "--train-manifest", str(manifest), "--single-task", str(run), "--max-per-task", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"asr", "sgc"} and summary["asr"]["n"] == 6
    # the same checkpoint as its own single-task reference: no ASR cost
    assert summary["asr"]["single-task ASR"] == summary["asr"]["seen instructions"]
    rel = summary["asr"].get("relative change")  # absent when the reference WER is 0
    assert rel is None or abs(rel) < 1e-9


def test_multitask_demo_path_at_tiny_size(tmp_path):
    """`speechlm demo --recipe tiny-mt`: the osum-tiny code path with random tiny models, in seconds."""
    from speechlm.cli import main
    from speechlm.corpora.synth import available_voices

    try:
        available_voices()
    except RuntimeError:
        pytest.skip("espeak-ng/flite not installed")
    out = tmp_path / "demo"
    assert main(["demo", "--recipe", "tiny-mt", "--out", str(out), "--synthetic", "10", "--real-per-source", "3",
                 "--eval-per-subset", "4"]) == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert "asr" in summary and "sgc" in summary
    assert (out / "eval" / "report.md").exists() and (out / "checkpoints" / "latest").exists()
    # the single-task ASR control: forked after the ASR-only stage (2 steps), trained on asr alone to the same step
    control = out / "asr-control"
    assert (out / "checkpoints" / "step-000002").exists()  # train() saves at every stage boundary
    assert (control / "checkpoints" / "latest").read_text().strip() == "step-000006"
    log = [json.loads(x) for x in (control / "train_log.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in log if r["split"] == "train") == 3  # steps 1-2 were not trained again
    cfg = json.loads((control / "checkpoints" / "step-000006" / "config.json").read_text())
    assert [s["tasks"] for s in cfg["train"]["stages"]] == [["asr"], ["asr"]]
    report = json.loads((control / "data_report.json").read_text())
    assert all(set(stage["examples"]) == {"asr"} for stage in report["tasks"])
    assert isinstance(summary["asr"]["single-task ASR"], float) and "relative change" in summary["asr"]
    assert "by source" in summary["sgc"]
    targets = json.loads((out / "eval" / "targets.json").read_text())
    assert any(t["target"].startswith("ASR cost") and t["value"] is not None for t in targets)
    assert "single-task ASR" in (out / "eval" / "report.md").read_text()


def test_loss_norm_example_trains_and_bad_values_are_named(tone_manifest, tmp_path):
    manifest = _gender_manifest(tone_manifest)
    common = [f"data.train_manifest={manifest}", "train.max_steps=2", "data.tasks=asr,sgc", "train.log_every=1"]
    run = tmp_path / "ex"
    train(load_recipe("tiny", common + [f"train.out_dir={run}", "train.loss_norm=example"]), progress=False)
    assert all(r["loss"] > 0 for r in _losses(run).values())
    with pytest.raises(ValueError, match="train.loss_norm"):
        train(load_recipe("tiny", common + [f"train.out_dir={tmp_path / 'bad'}", "train.loss_norm=median"]), progress=False)


def test_tasks_trained_together_need_their_own_instructions():
    """The instruction is all that tells `ser` (a label) from `asr+ser` (transcript, then label)."""
    from speechlm.tasks import TASKS, Task, register

    parse_task_weights(list(TASKS))  # every shipped record can be trained with every other
    register(Task(name="test-ser-copy", base="ser"))  # inherits ser's paraphrases
    try:
        with pytest.raises(ValueError, match="'ser' and 'test-ser-copy' share the instruction"):
            parse_task_weights(["ser", "test-ser-copy"])
        parse_task_weights(["asr", "test-ser-copy"])  # fine without ser
    finally:
        TASKS.pop("test-ser-copy", None)

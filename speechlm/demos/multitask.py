"""``speechlm demo --recipe osum-tiny``: the multi-task main job (ASR+X, curriculum, per-task report).

1. data: the synthetic multi-task corpus (style classes, word timestamps, spoken questions, commands) with
   the LLM's own text answers as the spoken-question references, plus the shared real speech with every task
   label, split by speaker; a separately seeded synthetic set is held out for testing;
2. training with the recipe's stage table (e.g. ASR first with the adapter alone, then every task with LoRA),
   then the single-task ASR control: the same recipe on ASR alone for as many steps (``demo.asr_control``);
3. the per-task report on held-out speakers with seen/held-out instructions, constrained decoding and the
   majority and linear-probe baselines (speechlm.evaluation.per_task), with a radar chart and confusion matrices.
"""

from __future__ import annotations

import time
from pathlib import Path

from speechlm.utils import real_data_root, write_json


def demo_tasks(cfg_name: str, out: str, minutes: float, synthetic: int, real_per_source: int, eval_per_task: int,
               seed: int) -> dict:
    """The multi-task demo; ``speechlm demo`` calls it for recipes with tasks or stages."""
    from speechlm.config import load_recipe
    from speechlm.corpora.chat_targets import answer_questions
    from speechlm.data.manifest import read_manifest, write_manifest
    from speechlm.corpora.real_tasks import prepare_real_multitask
    from speechlm.corpora.synth_tasks import build_multitask_corpus
    from speechlm.evaluation.per_task import evaluate_tasks
    from speechlm.training.loop import train

    t0 = time.time()
    run, data = Path(out), Path(out) / "data"
    llm = load_recipe(cfg_name).model.llm
    print(f"[speechlm demo] 1/3 data -> {data}", flush=True)
    synth_train = build_multitask_corpus(data / "multitask-train", n_utterances=synthetic, seed=seed)
    synth_test = build_multitask_corpus(data / "multitask-test", n_utterances=max(20, synthetic // 5), seed=seed + 1)
    train_cuts = read_manifest(answer_questions(synth_train, data / "multitask-train" / "answered.jsonl", llm=llm))
    test_cuts = read_manifest(answer_questions(synth_test, data / "multitask-test" / "answered.jsonl", llm=llm))
    root = real_data_root()
    if root is not None:
        real = prepare_real_multitask(root, data / "real", seed=seed, max_per_source=real_per_source or None)
        train_cuts += read_manifest(real["train"])
        test_cuts += read_manifest(real["test"])
    write_manifest(data / "train.jsonl", train_cuts)
    write_manifest(data / "test.jsonl", test_cuts)
    print(f"[speechlm demo] {len(train_cuts)} training clips, {len(test_cuts)} test clips", flush=True)

    print(f"[speechlm demo] 2/3 training ({cfg_name}" + (f", at most {minutes:g} min)" if minutes else ")"), flush=True)
    cfg = load_recipe(cfg_name, [f"data.train_manifest={data / 'train.jsonl'}", f"train.out_dir={run}",
                                 f"train.max_minutes={minutes}", f"train.seed={seed}"])
    ckpt = train(cfg)
    control = None
    if cfg.demo.asr_control:
        control = train_asr_control(cfg, ckpt, run / "asr-control")

    print("[speechlm demo] 3/3 per-task evaluation on held-out speakers", flush=True)
    summary = evaluate_tasks(str(ckpt), [str(data / "test.jsonl")], run / "eval", tasks="all",
                             train_manifest=str(data / "train.jsonl"), max_per_task=eval_per_task, seed=seed,
                             single_task=str(control or ""))
    print((run / "eval" / "report.md").read_text(), flush=True)
    write_json(run / "demo.json", {"minutes_total": (time.time() - t0) / 60, "train_clips": len(train_cuts),
                                   "test_clips": len(test_cuts), "checkpoint": str(ckpt),
                                   "asr_control": str(control) if control else None})
    print(f"[speechlm demo] done in {(time.time() - t0) / 60:.1f} min. Run folder: {run}", flush=True)
    return summary


def train_asr_control(cfg, multitask_ckpt: Path, out: Path) -> Path:
    """The same recipe trained on ASR alone, exactly as many steps as the multi-task run.

    Every stage keeps its steps and trainable parts but trains only `asr`. The leading stages that already
    were ASR-only are identical in both runs (same data, seed and sampler), so the control resumes from the
    multi-task run's checkpoint at the end of them (train() saves at every stage boundary) instead of
    training them again. It stops at the multi-task run's last step, on the same learning-rate schedule.
    """
    import dataclasses
    import json

    from speechlm.training.loop import train

    stages = [dict(s) for s in cfg.train.stages]
    fork = 0
    for s in stages:
        if [t.split(":")[0] for t in s.get("tasks", [])] != ["asr"]:
            break
        fork += int(s["steps"])
    last = int(json.loads((multitask_ckpt / "meta.json").read_text())["step"])
    control = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, tasks=[]),
        train=dataclasses.replace(cfg.train, out_dir=str(out), max_minutes=0.0, stop_at_step=last,
                                  stages=[{**s, "tasks": ["asr"]} for s in stages]),
    )
    resume = multitask_ckpt.parent / f"step-{fork:06d}" if 0 < fork < last else None
    if resume is not None and not resume.exists():
        resume = None
    print(f"[speechlm demo] single-task ASR control: steps {fork if resume else 0}..{last}"
          + (f", forked from {resume}" if resume else ""), flush=True)
    return train(control, resume=str(resume) if resume else None)

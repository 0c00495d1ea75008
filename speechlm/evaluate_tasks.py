"""Per-task evaluation of a multi-task checkpoint (`speechlm eval --tasks all`), with honest baselines.

For every task the test manifests serve (a line serves a task when it carries the task's target field):
- free generation prompted with the **seen** instruction pool and with the disjoint **held-out** pool
  (zero-shot instruction following, SpeechVerse), cycling through each pool across clips;
- **constrained** decoding for closed-set tasks (the most likely allowed label);
- baselines computed in the same run for closed-set tasks: the **majority** class of the training manifest
  and a **linear probe** on the frozen encoder's mean-pooled features (speechlm.probe).
Writes results.jsonl, summary.json, report.md, radar.png (all tasks, all systems) and one confusion matrix
per closed-set task.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from speechlm.data.audio import load_audio
from speechlm.data.manifest import Cut, validate
from speechlm.metrics import METRICS
from speechlm.mixture import eligible
from speechlm.report import markdown_table
from speechlm.tasks import Task, get_task
from speechlm.utils import write_json, write_jsonl


def _headline(task: Task, result: dict) -> float | None:
    return result.get(task.metric)


def _answers(model, task: Task, waves: list[np.ndarray], pool: tuple[str, ...], constrained: bool, batch_size: int) -> list[str]:
    """Answer every clip, the i-th prompted with pool[i % len(pool)]; returns the scored part of each answer."""
    from speechlm.infer import Transcriber

    hyps: list[str] = [""] * len(waves)
    for k, instruction in enumerate(pool):
        idx = list(range(k, len(waves), len(pool)))
        if not idx:
            continue
        tr = Transcriber(model, task, instruction=instruction, batch_size=batch_size, constrained=constrained)
        for i, h in zip(idx, tr([waves[i] for i in idx])):
            hyps[i] = task.parse_answer(h)
    return hyps


def _score(task: Task, refs: list[str], hyps: list[str]) -> dict:
    fn = METRICS[task.metric]
    if task.metric == "accuracy_f1" and task.labels is not None:
        fn = functools.partial(fn, labels=task.labels)
    return fn(refs, hyps)


def _relabel(cuts: list[Cut], task: Task) -> list[Cut]:
    """Cuts carrying the task's canonical answer under `_label` (aliases applied), for the baselines."""
    return [dataclasses.replace(c, labels={**c.labels, "_label": task.parse_answer(task.target_text(c.text, c.labels))})
            for c in cuts]


def evaluate_tasks(checkpoint: str, manifests: list[str], out: str | Path, tasks: str = "all", train_manifest: str = "",
                   batch_size: int = 8, device: str = "cpu", probe: bool = True, max_per_task: int = 0, seed: int = 0) -> dict:
    """Score ``checkpoint`` task by task on ``manifests``; see the module docstring for what is written."""
    from speechlm.probe import linear_probe, majority_baseline
    from speechlm.train import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint, device=device)
    test = [c for m in manifests for c in validate(m, required_fields=()).good]
    train = list(validate(train_manifest, required_fields=()).good) if train_manifest else []
    if tasks == "all":
        trained = [t for s in cfg.train.stages for t in s.get("tasks", [])] or list(cfg.data.tasks) or [cfg.data.task]
        names = list(dict.fromkeys(t.split(":")[0] for t in trained))
    else:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
    out = Path(out)
    rows, summary, confusions = [], {}, {}
    for name in names:
        task = get_task(name)
        cuts = [test[i] for i in eligible(test, task)]
        if max_per_task and len(cuts) > max_per_task:  # a fixed random subset: CPU-sized evaluation
            rng = np.random.default_rng(seed)
            cuts = [cuts[i] for i in sorted(rng.choice(len(cuts), max_per_task, replace=False))]
        if not cuts:
            summary[name] = {"skipped": f"no test line carries field {task.target!r}"}
            print(f"[speechlm] {name}: skipped, no test line carries field {task.target!r}", flush=True)
            continue
        waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]
        refs = [task.parse_answer(task.target_text(c.text, c.labels)) for c in cuts]
        systems = {"seen instructions": (task.instructions, False), "held-out instructions": (task.eval_instructions, False)}
        if task.labels is not None and not task.asr_prefix:
            systems["constrained"] = (task.instructions, True)
        entry: dict = {"metric": task.metric, "n": len(cuts)}
        for system, (pool, constrained) in systems.items():
            hyps = _answers(model, task, waves, pool, constrained, batch_size)
            result = _score(task, refs, hyps)
            entry[system] = _headline(task, result)
            entry[f"{system} details"] = {k: v for k, v in result.items() if isinstance(v, (int, float)) or v is None}
            if "confusion" in result and system == "seen instructions":
                # rows: reference labels; columns: the same plus "(other)" for answers outside the set
                confusions[name] = (result["confusion"], list(result["labels"]), list(result.get("confusion_labels") or result["labels"]))
            rows += [{"task": name, "system": system, "id": c.id, "ref": r, "hyp": h} for c, r, h in zip(cuts, refs, hyps)]
        if task.labels is not None and train:
            train_cuts = _relabel([train[i] for i in eligible(train, task)], task)
            if train_cuts:
                maj = majority_baseline([c.labels["_label"] for c in train_cuts], refs)
                entry["majority"] = maj["macro_f1"] if task.metric == "accuracy_f1" else maj["accuracy"]
                if probe:
                    pr = linear_probe(model.encoder, train_cuts, _relabel(cuts, task), "_label")
                    entry["linear probe"] = pr["macro_f1"] if task.metric == "accuracy_f1" else pr["accuracy"]
        summary[name] = entry
        print(f"[speechlm] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry.items()
                                                 if isinstance(v, float)), flush=True)
    write_jsonl(out / "results.jsonl", rows)
    write_json(out / "summary.json", summary)
    _write_report(out, summary, confusions)
    return summary


SYSTEMS = ("seen instructions", "held-out instructions", "constrained", "majority", "linear probe")


def _write_report(out: Path, summary: dict, confusions: dict) -> None:
    from speechlm.plots import confusion_matrix_png, radar_chart

    def cell(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    table = [[name, e.get("metric", "-"), *[cell(e.get(s)) for s in SYSTEMS], e.get("n", 0)]
             for name, e in summary.items() if "skipped" not in e]
    lines = ["# Per-task evaluation", "",
             "Headline metric per task (accuracy_f1: macro-F1; timestamps: word-boundary error in ms, lower is better; "
             "wer: lower is better). Seen vs held-out: the same model prompted with training paraphrases or with "
             "paraphrases it never saw. Constrained: the most likely allowed label. Baselines: majority class of the "
             "training data; a linear probe on the frozen encoder's pooled features.", "",
             markdown_table(["Task", "Metric", *SYSTEMS, "n"], table), ""]
    skipped = {k: v["skipped"] for k, v in summary.items() if "skipped" in v}
    if skipped:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()), ""]
    scores = {s: {f"{name}/{e['metric']}": e[s] for name, e in summary.items() if isinstance(e.get(s), (int, float))}
              for s in SYSTEMS}
    scores = {s: v for s, v in scores.items() if v}
    if scores and max(len(v) for v in scores.values()) >= 3:  # a radar needs three axes
        radar_chart(scores, out / "radar.png", title="Tasks: ours vs baselines (outer is better)")
        lines += ["![radar](radar.png)", ""]
    for name, (matrix, labels, cols) in confusions.items():
        png = confusion_matrix_png(matrix, labels, out / f"confusion_{name}.png", title=f"{name}: confusion (seen instructions)",
                                   col_labels=cols)
        lines += [f"![{name}]({png.name})", ""]
    (out / "report.md").write_text("\n".join(lines))

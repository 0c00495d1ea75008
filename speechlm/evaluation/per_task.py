"""Per-task evaluation of a multi-task checkpoint (`speechlm eval --tasks all`), with honest baselines.

For every task the test manifests serve (a line serves a task when it carries the task's target field):
- free generation prompted with the **seen** instruction pool and with the disjoint **held-out** pool
  (zero-shot instruction following, SpeechVerse), cycling through each pool across clips;
- **constrained** decoding for closed-set tasks (the most likely allowed label);
- baselines computed in the same run for closed-set tasks: the **majority** class of the training manifest
  and a **linear probe** on the frozen encoder's mean-pooled features (speechlm.evaluation.probe);
- optionally a **single-task ASR** model (same recipe, ASR only) beside the multi-task model's WER;
- every score again **per source** (corpus, or synthetic), since some targets hold on real speech only.
Writes results.jsonl, summary.json, targets.json (speechlm.evaluation.targets), report.md, radar.png (all tasks, all
systems) and one confusion matrix per closed-set task.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np

from speechlm.data.audio import load_audio
from speechlm.data.manifest import Cut, validate
from speechlm.evaluation.metrics import METRICS
from speechlm.tasks.mixture import eligible
from speechlm.evaluation.report import markdown_table
from speechlm.tasks import Task, get_task
from speechlm.utils import write_json, write_jsonl, write_text


def _headline(task: Task, result: dict) -> float | None:
    return result.get(task.metric)


def _answers(model, task: Task, waves: list[np.ndarray], pool: tuple[str, ...], constrained: bool, batch_size: int) -> list[str]:
    """Answer every clip, the i-th prompted with pool[i % len(pool)]; returns the scored part of each answer."""
    from speechlm.inference.transcribe import Transcriber

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


def source_of(cut: Cut) -> str:
    """The corpus a test clip comes from (`corpus` label; synthetic clips carry none), for per-source scores."""
    return str(cut.labels.get("corpus") or "synthetic")


def _details(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) or v is None}


def _by_source(task: Task, cuts: list[Cut], refs: list[str], hyps: list[str]) -> dict[str, dict]:
    """Scores of one system on each source's clips: a target may hold on real speech only (issue 3)."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cuts):
        groups.setdefault(source_of(c), []).append(i)
    return {src: _details(_score(task, [refs[i] for i in idx], [hyps[i] for i in idx])) for src, idx in sorted(groups.items())}


def evaluate_tasks(checkpoint: str, manifests: list[str], out: str | Path, tasks: str = "all", train_manifest: str = "",
                   batch_size: int = 8, device: str = "cpu", probe: bool = True, max_per_task: int = 0, seed: int = 0,
                   single_task: str = "") -> dict:
    """Score ``checkpoint`` task by task on ``manifests``; see the module docstring for what is written.

    ``single_task``: a checkpoint trained on ASR alone (the same recipe with every stage's tasks set to asr,
    e.g. the demo's control); its WER with the seen instructions is reported beside the multi-task model's,
    with the relative change (OSUM / SpeechVerse: adding tasks should not cost ASR more than 10% relative).
    """
    from speechlm.evaluation.probe import linear_probe, majority_baseline
    from speechlm.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint, device=device)
    test = [c for m in manifests for c in validate(m, required_fields=()).good]
    train = list(validate(train_manifest, required_fields=()).good) if train_manifest else []
    if tasks == "all":
        trained = [t for s in cfg.train.stages for t in s.get("tasks", [])] or list(cfg.data.tasks) or [cfg.data.task]
        names = list(dict.fromkeys(t.split(":")[0] for t in trained))
    else:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
    # the single-task model only answers the asr rows: load it only when they are scored
    reference = load_checkpoint(single_task, device=device)[0] if single_task and "asr" in names else None
    out = Path(out)
    rows, summary, confusions = [], {}, {}
    feature_cache: dict = {}  # pooled encoder features by clip: the probes of different tasks share clips
    for name in names:
        t0 = time.time()
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
        systems = {"seen instructions": (model, task.instructions, False), "held-out instructions": (model, task.eval_instructions, False)}
        if task.labels is not None and not task.asr_prefix:
            systems["constrained"] = (model, task.instructions, True)
        if reference is not None and name == "asr":
            systems["single-task ASR"] = (reference, task.instructions, False)
        entry: dict = {"metric": task.metric, "n": len(cuts), "by source": {}}
        for system, (net, pool, constrained) in systems.items():
            hyps = _answers(net, task, waves, pool, constrained, batch_size)
            result = _score(task, refs, hyps)
            entry[system] = _headline(task, result)
            entry[f"{system} details"] = _details(result)
            for src, det in _by_source(task, cuts, refs, hyps).items():
                entry["by source"].setdefault(src, {"n": det.get("n")})[system] = det
            if "confusion" in result and system == "seen instructions":
                # rows: reference labels; columns: the same plus "(other)" for answers outside the set
                confusions[name] = (result["confusion"], list(result["labels"]), list(result.get("confusion_labels") or result["labels"]))
            rows += [{"task": name, "system": system, "id": c.id, "source": source_of(c), "ref": r, "hyp": h}
                     for c, r, h in zip(cuts, refs, hyps)]
        if "single-task ASR" in entry and entry["single-task ASR"]:
            entry["relative change"] = (entry["seen instructions"] - entry["single-task ASR"]) / entry["single-task ASR"]
        if task.labels is not None and train:
            train_cuts = _relabel([train[i] for i in eligible(train, task)], task)
            if train_cuts:
                maj = majority_baseline([c.labels["_label"] for c in train_cuts], refs)
                entry["majority"] = maj["macro_f1"] if task.metric == "accuracy_f1" else maj["accuracy"]
                if probe:
                    test_cuts = _relabel(cuts, task)
                    pr = linear_probe(model.encoder, train_cuts, test_cuts, "_label", feature_cache=feature_cache)
                    entry["linear probe"] = pr["macro_f1"] if task.metric == "accuracy_f1" else pr["accuracy"]
                    if len(pr["predictions"]) == len(cuts):
                        for src, det in _by_source(task, cuts, refs, pr["predictions"]).items():
                            entry["by source"][src]["linear probe"] = det
        entry["seconds"] = time.time() - t0
        summary[name] = entry
        print(f"[speechlm] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry.items()
                                                 if isinstance(v, float) and k != "seconds") + f" ({entry['seconds']:.0f} s)", flush=True)
    from speechlm.evaluation.targets import check_targets, targets_markdown

    targets = check_targets(summary)
    extra = targets_markdown(targets) if any(t["met"] is not None for t in targets) else []
    write_jsonl(out / "results.jsonl", rows)
    write_json(out / "summary.json", summary)
    write_json(out / "targets.json", targets)
    _write_report(out, summary, confusions, extra)
    return summary


SYSTEMS = ("seen instructions", "held-out instructions", "constrained", "single-task ASR", "majority", "linear probe")
SOURCE_SYSTEMS = ("seen instructions", "held-out instructions", "constrained", "single-task ASR", "linear probe")


def _cell(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def source_table(summary: dict) -> list[list]:
    """Rows task / source / n / headline per system, for tasks whose test clips come from two or more sources."""
    table = []
    for name, e in summary.items():
        by = e.get("by source") or {}
        if len(by) < 2:
            continue
        for src, d in by.items():
            table.append([name, src, d.get("n", 0), *[_cell((d.get(s) or {}).get(e["metric"])) for s in SOURCE_SYSTEMS]])
    return table


def _write_report(out: Path, summary: dict, confusions: dict, extra: list[str] = ()) -> None:
    from speechlm.evaluation.plots import confusion_matrix_png, radar_chart

    table = [[name, e.get("metric", "-"), *[_cell(e.get(s)) for s in SYSTEMS], e.get("n", 0)]
             for name, e in summary.items() if "skipped" not in e]
    lines = ["# Per-task evaluation", "",
             "Headline metric per task (accuracy_f1: macro-F1; timestamps: word-boundary error in ms, lower is better; "
             "wer: lower is better). Seen vs held-out: the same model prompted with training paraphrases or with "
             "paraphrases it never saw. Constrained: the most likely allowed label. Single-task ASR: the same recipe "
             "trained on ASR alone for as many steps. Baselines: majority class of the training data; a linear probe "
             "on the frozen encoder's pooled features.", "",
             markdown_table(["Task", "Metric", *SYSTEMS, "n"], table), ""]
    asr = summary.get("asr") or {}
    if asr.get("relative change") is not None:
        rel = asr["relative change"]
        lines += [f"ASR cost of multi-task training: WER {asr['seen instructions']:.3f} (multi-task) vs "
                  f"{asr['single-task ASR']:.3f} (single-task), {rel:+.1%} relative "
                  f"({'within' if rel <= 0.10 else 'over'} the 10% budget of OSUM / SpeechVerse).", ""]
    skipped = {k: v["skipped"] for k, v in summary.items() if "skipped" in v}
    if skipped:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()), ""]
    by_source = source_table(summary)
    if by_source:
        lines += ["## By source", "", "The same headline metric on each source's clips (synthetic: the TTS corpus).", "",
                  markdown_table(["Task", "Source", "n", *SOURCE_SYSTEMS], by_source), ""]
    lines += list(extra)
    scores = {s: {f"{name}/{e['metric']}": e[s] for name, e in summary.items() if isinstance(e.get(s), (int, float))}
              for s in SYSTEMS if s != "single-task ASR"}
    scores = {s: v for s, v in scores.items() if v}
    if scores and max(len(v) for v in scores.values()) >= 3:  # a radar needs three axes
        # a boundary error has no natural 0..1 scale; "relative to the best system" would draw a lone 1-s error
        # at the rim, so it is drawn on a fixed 0-500 ms axis (0 ms at the rim, 500 ms or worse at the centre)
        ranges = {k: (0.0, 500.0) for v in scores.values() for k in v if k.endswith("/timestamps")}
        radar_chart(scores, out / "radar.png", title="Tasks: ours vs baselines (outer is better)", ranges=ranges)
        lines += ["![radar](radar.png)", ""]
    for name, (matrix, labels, cols) in confusions.items():
        png = confusion_matrix_png(matrix, labels, out / f"confusion_{name}.png", title=f"{name}: confusion (seen instructions)",
                                   col_labels=cols)
        lines += [f"![{name}]({png.name})", ""]
    write_text(out / "report.md", "\n".join(lines))

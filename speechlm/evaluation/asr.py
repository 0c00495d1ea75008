"""Evaluation: score systems on manifests, side by side, and write results a person can read.

Each system (a trained checkpoint, the same model untrained, Whisper's own decoder) answers every clip of
every manifest; rows go to ``results.jsonl``, metrics per system and subset to ``summary.json``, and a
Markdown table to ``report.md`` (speechlm.evaluation.report). Clips longer than the model's maximum are split at
pauses and stitched by the systems themselves (speechlm.inference.long_audio); an empty clip stops with its name.
WER uses Whisper's English normalizer (speechlm.evaluation.metrics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from speechlm.data.audio import load_audio
from speechlm.data.manifest import Cut, validate
from speechlm.evaluation.report import print_comparison, summarize_rows, write_eval_outputs
from speechlm.inference.transcribe import check_waves

System = Callable[[Sequence[np.ndarray]], list[str]]


def score_systems(systems: dict[str, System], subsets: dict[str, list[Cut]], task_name: str, metric: str,
                  out_dir: str | Path, target: str = "text", title: str = "Evaluation") -> dict:
    """Run every system on every subset; write results.jsonl, summary.json, report.md; return the summary."""
    rows: list[dict] = []
    timing: dict[str, dict[str, float]] = {}
    for subset, cuts in subsets.items():
        waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]
        check_waves(waves, names=[f"{c.audio} ({c.id})" for c in cuts])  # an empty clip is named, not a torch error
        audio_s = sum(len(w) for w in waves) / 16000
        refs = [c.text if target == "text" else str(c.labels.get(target, "")) for c in cuts]
        for name, system in systems.items():
            t0 = time.time()
            hyps = system(waves)
            dt = time.time() - t0
            timing.setdefault(name, {})[subset] = dt / max(1e-9, audio_s)  # real-time factor
            rows += [{"id": c.id, "system": name, "subset": subset, "task": task_name, "ref": r, "hyp": h}
                     for c, r, h in zip(cuts, refs, hyps)]
            print(f"[speechlm] {name} on {subset}: {len(cuts)} clips, RTF {dt / max(1e-9, audio_s):.3f}", flush=True)
    by_system = summarize_rows(rows, metric=metric)
    summary = {task_name: {metric: {s: v.get("all", next(iter(v.values())))[metric] for s, v in by_system.items()}},
               "by_system": by_system, "real_time_factor": timing}
    paths = write_eval_outputs(out_dir, rows, summary, metric=metric, title=title)
    print_comparison(by_system, metric=metric, title=title)
    print(f"[speechlm] wrote {paths['report']}", flush=True)
    return summary


def evaluate(manifest: list[str] = (), out: str = "runs/eval", checkpoint: str = "", baseline: bool = False, untrained: bool = False,
             task: str = "", num_beams: int = 1, batch_size: int = 8, held_out_instructions: bool = False,
             tasks: str = "", train_manifest: str = "", single_task: str = "", max_per_task: int = 0,
             device: str = "cpu", ctc_decode_weight: float = -1.0) -> dict:
    """Score a checkpoint (and baselines) on one or more manifests; writes results.jsonl, summary.json, report.md.

    manifest: JSONL manifests; each is one subset of the report (named by its file stem).
    out: output folder.
    checkpoint: checkpoint or run folder of a trained model (optional if only the baseline is scored).
    baseline: also score Whisper tiny.en's own decoder on the same clips.
    untrained: also score the same model with untrained adapter and LoRA (needs --checkpoint).
    task: task record (default: the checkpoint's task, else asr).
    num_beams: beam size (1: greedy).
    batch_size: clips decoded together.
    held_out_instructions: prompt with the held-out instruction pool (zero-shot instruction following).
    tasks: per-task report instead: `all` (the tasks the checkpoint trained on) or a comma list; seen vs held-out
        instructions, constrained vs free decoding, baselines, radar chart and confusion matrices.
    train_manifest: with --tasks, the training manifest for the majority and linear-probe baselines.
    single_task: with --tasks, a checkpoint trained on ASR alone; its WER goes beside the multi-task model's.
    max_per_task: with --tasks (or a discrete checkpoint), score a fixed random subset of at most this many clips per task or subset (0: all).
    device: cpu or cuda.
    ctc_decode_weight: joint CTC/LLM decoding of transcripts at this weight (0: off; -1: as the checkpoint says).
    """
    from speechlm.checkpoint.discrete import is_discrete_checkpoint

    if checkpoint and is_discrete_checkpoint(checkpoint):  # a discrete speech LM: ASR WER, TTS WER, chain of modality
        from speechlm.evaluation.discrete import evaluate_discrete

        return evaluate_discrete(checkpoint, {Path(m).stem: m for m in manifest}, out, n=max_per_task)
    from speechlm.inference.transcribe import CTCTranscriber, Transcriber, WhisperBaseline
    from speechlm.tasks import get_task

    if not manifest:
        raise ValueError("give at least one --manifest")
    if tasks:
        if not checkpoint:
            raise ValueError("--tasks needs --checkpoint")
        from speechlm.evaluation.per_task import evaluate_tasks

        return evaluate_tasks(checkpoint, list(manifest), out, tasks=tasks, train_manifest=train_manifest,
                              batch_size=batch_size, device=device, single_task=single_task, max_per_task=max_per_task)
    systems: dict[str, System] = {}
    task_rec = get_task(task or "asr")
    if checkpoint:
        tr = Transcriber.from_checkpoint(checkpoint, task=task or None, device=device, num_beams=num_beams,
                                         batch_size=batch_size, held_out_instructions=held_out_instructions)
        task_rec = tr.task
        tr.set_ctc_decode_weight(ctc_decode_weight)
        systems["speechlm (trained)"] = tr
        if tr.model.ctc is not None and task_rec.target == "text":  # what the adapter alone hears, no LLM
            systems["speechlm greedy CTC (no LLM)"] = CTCTranscriber(tr.model, batch_size=batch_size)
        if untrained:
            from speechlm.checkpoint import read_config
            from speechlm.model.builders import build_speechlm

            cfg, _ = read_config(checkpoint)
            systems["speechlm (untrained)"] = Transcriber(build_speechlm(cfg.model, seed=cfg.train.seed).to(device), task_rec,
                                                          num_beams=num_beams, batch_size=batch_size)
    if baseline:
        systems["whisper tiny.en decoder"] = WhisperBaseline(num_beams=num_beams, batch_size=batch_size)
    if not systems:
        raise ValueError("nothing to score: give --checkpoint and/or --baseline")
    required = ("text",) if task_rec.target == "text" else (task_rec.target,)
    subsets = {}
    for m in manifest:
        subsets[Path(m).stem] = list(validate(m, required_fields=required).good)
    return score_systems(systems, subsets, task_rec.name, task_rec.metric, out, target=task_rec.target,
                         title=f"{task_rec.name}: {task_rec.metric.upper()} by system and subset")

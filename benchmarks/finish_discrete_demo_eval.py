"""Finish a speechgpt-tiny demo's step 5 (evaluation) on its own checkpoint: the same subsets (same seed) and the
same evaluate_discrete call the demo makes, optionally on fewer clips per subset. For a demo whose evaluation was
stopped (an undertrained model's generations run to their caps and take minutes a clip).

    python benchmarks/finish_discrete_demo_eval.py runs/sgpt_demo 5     # run folder, clips per subset [, recipe]

The run folder's latest checkpoint is scored.
"""
import sys, time
from pathlib import Path
from speechlm.config import load_recipe
from speechlm.demos.discrete import build_data, check_targets, targets_markdown
from speechlm.evaluation.discrete import evaluate_discrete, report_markdown
from speechlm.utils import write_json, write_text

run = Path(sys.argv[1])
base = load_recipe(sys.argv[3] if len(sys.argv) > 3 else "speechgpt-tiny")
d = base.demo
t0 = time.time()
_, _, subsets = build_data(run, base, d.synthetic, d.real_per_source, d.eval_per_subset, 0, 0, False)
ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else d.eval_per_subset
summary = evaluate_discrete(ckpt, subsets, run / "eval", n=N, progress=False)
timing = {"eval_min": (time.time() - t0) / 60}
summary["targets"] = check_targets(summary, timing)
summary["eval_only"] = {"checkpoint": str(ckpt), **timing, "note": f"evaluation re-run after the demo's own was stopped, {N} clips per subset"}
write_json(run / "summary.json", summary)
write_text(run / "report.md", report_markdown(summary) + "\n" + targets_markdown(summary["targets"]))
print(report_markdown(summary))

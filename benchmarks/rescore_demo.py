"""Re-score a finished `speechlm demo` run's checkpoint on exactly its held-out clips, under other model settings.

    python benchmarks/rescore_demo.py --run runs/demo_d --set model.ctc_length_budget=1.2 \
        --out benchmarks/results/demo_ctc/run_d_budget

The subsets (held-out FSDD, RAVDESS, `asr_en`, held-out synthetic) are read back from the run's results.jsonl
(their clip ids), and the clips from the run's manifests (data/real/test*.jsonl, data/val.jsonl), so the figures are
comparable with the run's own report. ``--set`` changes fields of the checkpoint's model after loading it. Only
settings that act at decoding time make sense here (``model.ctc_length_budget``); training settings would not
retrain anything. Writes results.jsonl, summary.json and report.md (the demo's format) plus rescore.json (command,
settings) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a demo run folder (checkpoints/, results.jsonl, data/)")
    ap.add_argument("--checkpoint", default="", help="checkpoint to score (default: the run's latest)")
    ap.add_argument("--set", nargs="*", default=[], help="model fields after loading, e.g. model.ctc_length_budget=1.2")
    ap.add_argument("--out", required=True, help="output folder")
    a = ap.parse_args()

    from speechlm.checkpoint import load_checkpoint
    from speechlm.data.manifest import read_manifest
    from speechlm.evaluation.asr import score_systems
    from speechlm.inference.transcribe import CTCTranscriber, Transcriber
    from speechlm.tasks import get_task
    from speechlm.utils import write_json

    run = Path(a.run)
    ids: dict[str, list[str]] = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["system"] == "speechlm (trained)":
            ids.setdefault(r["subset"], []).append(r["id"])
    pool = {}
    for m in [*sorted((run / "data" / "real").glob("test*.jsonl")), run / "data" / "val.jsonl"]:
        for c in read_manifest(m):
            pool.setdefault(c.id, c)
    missing = [i for v in ids.values() for i in v if i not in pool]
    if missing:
        raise SystemExit(f"{len(missing)} clip ids of {run / 'results.jsonl'} are in none of the run's manifests, e.g. {missing[:3]}")
    subsets = {name: [pool[i] for i in v] for name, v in ids.items()}

    model, cfg, ckpt = load_checkpoint(a.checkpoint or run)  # a run folder resolves to its latest checkpoint
    settings = {}
    for spec in a.set:
        key, _, value = spec.partition("=")
        section, _, field = key.partition(".")
        if section != "model" or not hasattr(model, field):
            raise SystemExit(f"--set {spec!r}: expected model.FIELD=VALUE for a field the loaded model has")
        setattr(model, field, type(getattr(model, field))(value))
        settings[key] = getattr(model, field)
    task = get_task(cfg.data.task)
    label = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in settings.items())
    systems = {f"speechlm (trained){', ' + label if label else ''}": Transcriber(model, task, max_new_tokens=64)}
    if model.ctc is not None:
        systems["speechlm greedy CTC (no LLM)"] = CTCTranscriber(model)
    t0 = time.time()
    out = Path(a.out)
    score_systems(systems, subsets, task.name, task.metric, out, title=f"Re-scored {run.name}: WER (%) on its held-out clips")
    write_json(out / "rescore.json", {"command": " ".join(["python", *sys.argv]), "run": str(run), "checkpoint": str(ckpt),
                                      "settings": settings, "minutes": (time.time() - t0) / 60,
                                      "clips": {k: len(v) for k, v in subsets.items()}})
    print(f"wrote {out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

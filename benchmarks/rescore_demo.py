"""Re-score a finished `speechlm demo` run's checkpoint on exactly its held-out clips, under other model settings.

    python benchmarks/rescore_demo.py --run runs/demo_d --set model.ctc_length_budget=1.2 \
        --out benchmarks/results/demo_ctc/run_d_budget

The subsets (held-out FSDD, RAVDESS, `asr_en`, held-out synthetic) are read back from the run's results.jsonl
(their clip ids), and the clips from the run's manifests (data/real/test*.jsonl, data/val.jsonl), so the figures are
comparable with the run's own report. ``--set`` changes fields of the checkpoint's model after loading it. Only
settings that act at decoding time make sense here (``model.ctc_length_budget``); training settings would not
retrain anything. ``--vary`` scores one field at several values in one go, e.g.

    python benchmarks/rescore_demo.py --run runs/demo_d --set model.ctc_length_budget=1.2 \
        --vary model.ctc_decode_weight=0.0,0.3,0.5 --subsets "open-vocabulary (asr_en)" --out /tmp/sweep

Writes results.jsonl, summary.json and report.md (the demo's format) plus rescore.json (command,
settings) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a demo run folder (checkpoints/, results.jsonl, data/)")
    ap.add_argument("--checkpoint", default="", help="checkpoint to score (default: the run's latest)")
    ap.add_argument("--set", nargs="*", default=[], help="model fields after loading, e.g. model.ctc_length_budget=1.2")
    ap.add_argument("--vary", default="", help="one model field over several values, one system each: "
                    "model.ctc_decode_weight=0.3,0.5 (the --set fields apply to all)")
    ap.add_argument("--subsets", nargs="*", default=[], help="score only these subsets (names as in the run's report)")
    ap.add_argument("--beams", type=int, default=1, help="beam size of the LLM's search (1: greedy)")
    ap.add_argument("--no-ctc", action="store_true", help="leave out the greedy-CTC system")
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
    subsets = {name: [pool[i] for i in v] for name, v in ids.items() if not a.subsets or name in a.subsets}
    if not subsets:
        raise SystemExit(f"--subsets {a.subsets}: none of the run's subsets {sorted(ids)}")

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
    systems = {}
    if a.vary:
        key, _, values = a.vary.partition("=")
        field = key.partition(".")[2]
        if not key.startswith("model.") or not hasattr(model, field) or not values:
            raise SystemExit(f"--vary {a.vary!r}: expected model.FIELD=V1,V2,... for a field the loaded model has")
        for v in values.split(","):
            value = type(getattr(model, field))(v)

            def decode(waves, field=field, value=value, tr=Transcriber(model, task, max_new_tokens=64, num_beams=a.beams)):
                setattr(model, field, value)  # the systems share one model: each sets its value before decoding
                return tr(waves)

            systems[f"speechlm (trained), {', '.join([label, f'{field}={value}'] if label else [f'{field}={value}'])}"] = decode
        settings[key] = values
    else:
        systems[f"speechlm (trained){', ' + label if label else ''}"] = Transcriber(model, task, max_new_tokens=64, num_beams=a.beams)
    if model.ctc is not None and not a.no_ctc:
        systems["speechlm greedy CTC (no LLM)"] = CTCTranscriber(model)
    t0 = time.time()
    out = Path(a.out)
    score_systems(systems, subsets, task.name, task.metric, out, title=f"Re-scored {run.name}: WER (%) on its held-out clips")
    write_json(out / "rescore.json", {"command": shlex.join(["python", *sys.argv]), "run": str(run), "checkpoint": str(ckpt),
                                      "settings": settings, "beams": a.beams, "minutes": (time.time() - t0) / 60,
                                      "clips": {k: len(v) for k, v in subsets.items()}})
    print(f"wrote {out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time to accuracy: minutes of training until the open-vocabulary dev WER first drops below a threshold, for the
CTC-first recipe (``demo``: CTC on the LLM's embeddings, then LM + CTC) against LM loss alone (how SLAM-ASR and
Ultravox train: stack x8, adapter + LoRA from step 0, the previous ``demo`` recipe), on the same cached encoder
features, the same CPU, in one run.

    python benchmarks/bench_alignment.py --train runs/demo/data/features/manifest.jsonl \\
        --dev runs/demo/data/real/test_open.jsonl --minutes 12 --every 2
        # -> results/alignment_time_to_accuracy.json (about 2 x (minutes + evaluations))

Each arm trains in chunks of ``--every`` minutes (``train.max_minutes`` per call, then ``--resume``: resume is
exact, so the chunks add up to one run), and after each chunk its checkpoint transcribes the dev clips. Only
training time counts toward the minutes; evaluation time is recorded apart. Scored: the LLM's transcript, and for
the CTC arm also the greedy CTC transcript (``speechlm.inference.transcribe.CTCTranscriber``, no LLM).
WER uses Whisper's English normalizer, as every report of the toolkit does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ARMS = {
    "ctc-first": {"recipe": "demo", "overrides": []},
    # LM loss only: the previous demo recipe (Ultravox-style stack x8, no CTC, no stages)
    "lm-only": {"recipe": "demo", "overrides": [
        "model.downsample=8", "model.ctc_head=false", "model.compress_audio=false", "train.stages=[]",
        "train.stage_schedule=false", "train.warmup_steps=30", "train.max_steps=340"]},
}


def _dev(manifest: str, limit: int):
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest

    cuts = read_manifest(manifest)[: limit or None]
    return cuts, [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]


def _score(run: Path, cuts, waves) -> dict:
    from speechlm.checkpoint import load_checkpoint
    from speechlm.evaluation.metrics import wer_details
    from speechlm.inference.transcribe import CTCTranscriber, Transcriber
    from speechlm.tasks import get_task

    model, cfg, ckpt = load_checkpoint(run)
    refs = [c.text for c in cuts]
    out = {"step": int(json.loads((ckpt / "meta.json").read_text())["step"]),
           "wer_llm": float(wer_details(refs, Transcriber(model, get_task("asr"), max_new_tokens=64)(waves))["wer"])}
    if model.ctc is not None:
        out["wer_ctc"] = float(wer_details(refs, CTCTranscriber(model)(waves))["wer"])
    return out


def _train_minutes(run: Path) -> float:
    """Training seconds summed over the chunks (each chunk's log restarts elapsed_s)."""
    total, last = 0.0, 0.0
    log = run / "train_log.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        rec = json.loads(line)
        if rec.get("split") != "train":
            continue
        if rec["elapsed_s"] < last:  # a new chunk started
            total += last
        last = rec["elapsed_s"]
    return (total + last) / 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="training manifest with cached features (speechlm prepare --features)")
    ap.add_argument("--val", default="", help="validation manifest (training log diagnostics)")
    ap.add_argument("--dev", required=True, help="open-vocabulary dev manifest (never in training)")
    ap.add_argument("--minutes", type=float, default=12.0, help="training minutes per arm")
    ap.add_argument("--every", type=float, default=2.0, help="minutes of training between evaluations")
    ap.add_argument("--threshold", type=float, default=0.5, help="WER threshold")
    ap.add_argument("--dev-limit", type=int, default=0, help="score at most this many dev clips (0: all)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--work", default="runs/bench_alignment")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "alignment_time_to_accuracy.json"))
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from speechlm.config import load_recipe
    from speechlm.training.loop import train

    cuts, waves = _dev(args.dev, args.dev_limit)
    result = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "dev_clips": len(cuts),
              "threshold": args.threshold, "arms": {}}
    for name in args.arms:
        arm = ARMS[name]
        run = Path(args.work) / name
        curve, eval_s = [], 0.0
        chunks = max(1, round(args.minutes / args.every))
        for k in range(chunks):
            overrides = [f"data.train_manifest={args.train}", f"train.out_dir={run}", f"train.max_minutes={args.every}",
                         "train.save_every=100000", "train.eval_every=0", "train.log_every=1", *arm["overrides"]]
            if args.val:
                overrides.append(f"data.val_manifest={args.val}")
            cfg = load_recipe(arm["recipe"], overrides)
            train(cfg, resume="auto" if k else None, progress=False)
            t0 = time.time()
            point = {"train_min": round(_train_minutes(run), 3), **_score(run, cuts, waves)}
            eval_s += time.time() - t0
            curve.append(point)
            print(f"[bench] {name}: {point}", flush=True)
            if point["step"] >= cfg.train.max_steps:
                break
        first = {}
        for key in ("wer_llm", "wer_ctc"):
            hit = next((p["train_min"] for p in curve if key in p and p[key] < args.threshold), None)
            if any(key in p for p in curve):
                first[key] = hit
        result["arms"][name] = {"curve": curve, "minutes_to_threshold": first, "eval_s": round(eval_s, 1),
                                "overrides": arm["overrides"]}
    ctc = result["arms"].get("ctc-first", {}).get("minutes_to_threshold", {})
    lm = result["arms"].get("lm-only", {}).get("minutes_to_threshold", {})
    best_ctc = min([m for m in ctc.values() if m is not None], default=None)
    if best_ctc is not None:
        lm_min = lm.get("wer_llm")
        result["speedup"] = (f"{lm_min / best_ctc:.1f}x" if lm_min else
                             f">= {args.minutes / best_ctc:.1f}x (lm-only never reached WER < {args.threshold} in {args.minutes} min)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "arms"}, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

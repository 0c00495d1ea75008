"""Ablations of the CTC alignment stage (issue 9): train the adapter alone with CTC on the LLM's embeddings for a
fixed number of steps on cached encoder features, then score its greedy CTC transcript (no LLM) on held-out sets.
Fixed steps, not minutes, so a busy CPU slows an arm without changing its result.

    python benchmarks/bench_ctc_ablation.py --name ls --train FEATURES/manifest.jsonl --steps 1000 \\
        --dev runs/demo/data/real/test_open.jsonl --val runs/demo/data/val.jsonl [--set data.frame_mask=0.1 ...]
    (the demo recipe trains Whisper's top layer: its features come from `prepare manifest ... --features
    --below-top 1`; `--set model.train_encoder_layers=0` takes whole-encoder features and trains the adapter alone)
    python benchmarks/bench_ctc_ablation.py --name baseline-step1000 --score runs/demo_b/checkpoints/step-001000 ...
    python benchmarks/bench_ctc_ablation.py --name decoding-D --decoding runs/demo_d --dev ...   # LLM decoding variants

Each arm appends one record (name, overrides, steps, training seconds, WER per set, first transcripts) to
``--out`` (default results/listening_ablation.json), with the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def score(ckpt: str, sets: dict[str, str]) -> dict:
    from speechlm.checkpoint import load_checkpoint
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest
    from speechlm.evaluation.metrics import wer_details
    from speechlm.inference.transcribe import CTCTranscriber

    model, _, _ = load_checkpoint(ckpt)
    tr = CTCTranscriber(model)
    out: dict = {}
    for name, path in sets.items():
        cuts = read_manifest(path)
        hyps = tr([load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts])
        out[name] = float(wer_details([c.text for c in cuts], hyps)["wer"])
        out[f"{name}_examples"] = [[c.text, h] for c, h in list(zip(cuts, hyps))[:3]]
    return out


def decoding(ckpt: str, dev: str, budget_factor: float = 1.2) -> dict:
    """The LLM transcript of a trained checkpoint on ``dev`` three ways: plain greedy (what the demo reports), greedy
    with 3-gram blocking (HF generate's ``no_repeat_ngram_size``), and greedy with a token budget of
    ``budget_factor`` x the greedy CTC transcript's token count + 2 (the CTC says how long the answer can be)."""
    import functools
    import math

    from speechlm.checkpoint import load_checkpoint
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest
    from speechlm.evaluation.metrics import wer_details
    from speechlm.inference.transcribe import CTCTranscriber, Transcriber
    from speechlm.tasks import get_task

    model, _, _ = load_checkpoint(ckpt)
    cuts = read_manifest(dev)
    refs = [c.text for c in cuts]
    waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]
    asr = get_task("asr")

    def row(hyps: list[str]) -> dict:
        d = wer_details(refs, hyps)
        return {k: d[k] for k in ("wer", "substitutions", "deletions", "insertions")}

    out = {"greedy": row(Transcriber(model, asr, max_new_tokens=64)(waves))}
    ctc = CTCTranscriber(model)(waves)
    out["greedy_ctc_no_llm"] = row(ctc)
    budgets = [max(4, math.ceil(budget_factor * len(model.tokenizer(h, add_special_tokens=False)["input_ids"])) + 2) for h in ctc]
    out[f"greedy_ctc_length_budget_x{budget_factor:g}"] = row(
        [Transcriber(model, asr, max_new_tokens=b)([w])[0] for w, b in zip(waves, budgets)])
    plain = model.causal_lm.generate
    model.causal_lm.generate = functools.partial(plain, no_repeat_ngram_size=3)
    out["greedy_no_repeat_3gram"] = row(Transcriber(model, asr, max_new_tokens=64)(waves))
    model.causal_lm.generate = plain
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="arm name")
    ap.add_argument("--train", default="", help="training manifest with cached features")
    ap.add_argument("--steps", type=int, default=1000, help="CTC-only optimizer steps")
    ap.add_argument("--dev", required=True, help="open-vocabulary dev manifest (never in training)")
    ap.add_argument("--val", default="", help="second scored set (held-out synthetic)")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides, e.g. model.adapter=stack-tf")
    ap.add_argument("--score", default="", help="score this checkpoint instead of training")
    ap.add_argument("--decoding", default="", help="score this checkpoint's LLM transcript under decoding variants")
    ap.add_argument("--work", default="runs/ctc_ablation")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "listening_ablation.json"))
    a = ap.parse_args()
    sets = {"dev": a.dev, **({"val": a.val} if a.val else {})}
    rec = {"name": a.name, "command": " ".join(["python", *sys.argv]), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    ckpt = a.score
    if a.decoding:
        rec.update(checkpoint=a.decoding, dev_wer=decoding(a.decoding, a.dev))
    elif not ckpt:
        from speechlm.config import load_recipe
        from speechlm.training.loop import train

        # the adapter, and Whisper's top layers when the recipe trains them (features cached --below-top N)
        trainable = "[adapter, encoder]" if load_recipe(a.recipe, list(a.set)).model.train_encoder_layers else "adapter"
        stage = f"[{{steps: {a.steps}, tasks: [asr], trainable: {trainable}, lm: 0, ctc: 1}}]"
        cfg = load_recipe(a.recipe, [f"data.train_manifest={a.train}", f"train.out_dir={Path(a.work) / a.name}",
                                     f"train.max_steps={a.steps}", "train.max_minutes=0", f"train.save_every={a.steps}",
                                     "train.eval_every=0", f"train.stages={stage}", *a.set])
        t0 = time.time()
        ckpt = str(train(cfg, progress=False))
        rec.update(steps=a.steps, overrides=a.set, train_s=round(time.time() - t0, 1))
    if not a.decoding:
        rec.update(score(ckpt, sets))
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.exists() else {"what": __doc__.splitlines()[0], "arms": []}
    doc["arms"] = [r for r in doc["arms"] if r["name"] != a.name] + [rec]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if not k.endswith("_examples")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

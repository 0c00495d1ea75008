"""Label tags (speechlm.model.label_frames): does the LLM answer what the model's own probe heard?

For a multi-task run whose model has `model.label_frames`, scores on the run's held-out test clips (1) each in-model
probe's argmax, no LLM, per field and source, and (2) the LLM's answer to the task's first instruction, free and
constrained to the labels, on the held-out RAVDESS clips. Writes JSON.

    python benchmarks/label_tags_diag.py --run runs/osum_g --out benchmarks/results/osum_tiny/G_label_tags/diag.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="demo run folder (its latest checkpoint, data/test.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=int, default=3, help="LLM answers on every N-th held-out RAVDESS clip")
    args = ap.parse_args()

    from speechlm.checkpoint import load_checkpoint
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest
    from speechlm.inference.transcribe import Transcriber
    from speechlm.tasks import get_task

    model, _, ckpt = load_checkpoint(args.run)
    model.eval()
    ad = model.adapter
    cuts = read_manifest(f"{args.run}/data/test.jsonl")

    def label(task, cut):  # the canonical answer, aliases applied, as the per-task report scores it
        return task.parse_answer(task.target_text(cut.text, cut.labels))

    probe: dict[str, dict[str, float]] = {}
    for g, name in enumerate(ad.names):
        task = get_task(name)
        sel = [c for c in cuts if c.labels.get(task.target) not in (None, "")]
        hits: dict[str, list[int]] = collections.defaultdict(list)
        for i in range(0, len(sel), 16):
            chunk = sel[i:i + 16]
            with torch.no_grad():
                model.adapt([torch.as_tensor(load_audio(c.audio, start=c.start, duration=c.duration)) for c in chunk])
            for c, k in zip(chunk, ad.last_logits[g].argmax(-1).tolist()):
                hits[str(c.labels.get("corpus") or "synthetic")].append(int(task.labels[k] == label(task, c)))
        probe[name] = {src: round(float(np.mean(h)), 3) for src, h in sorted(hits.items())}
        probe[name]["n"] = {src: len(h) for src, h in sorted(hits.items())}

    rav = [c for c in cuts if c.labels.get("emotion") and c.labels.get("corpus") == "ravdess"][::args.every]
    waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in rav]
    llm = {}
    for name in ("ser", "sgc"):
        task = get_task(name)
        refs = [label(task, c) for c in rav]
        for constrained in (False, True):
            tr = Transcriber(model, task, instruction=task.instructions[0], batch_size=8, constrained=constrained)
            hyps = [task.parse_answer(h) for h in tr(waves)]
            llm[f"{name} {'constrained' if constrained else 'free'}"] = round(float(np.mean([h == r for h, r in zip(hyps, refs)])), 3)
    out = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "command": f"python benchmarks/label_tags_diag.py --run {args.run} --out {args.out}",
           "when": time.strftime("%Y-%m-%d %H:%M"), "checkpoint": str(ckpt), "probe_accuracy": probe,
           "llm_accuracy_heldout_ravdess": llm, "n_ravdess": len(rav)}
    from speechlm.utils import write_json

    write_json(args.out, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

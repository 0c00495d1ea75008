"""CTC head step cost (issue 9): the shipped head (E's rows scored apart from the learned blank, no gradient for
E's table) against the earlier one-table formula (blank concatenated to E, so autograd built a [C+1, H] gradient
to keep one row of it), at the demo's sizes: SmolLM2's E [49152, 576], the demo's training vocabulary (13,264
tokens), a 24-s batch of 8 clips at 12.5 frames/s. Forward + backward of the CTC loss, best of N, same process.

    python benchmarks/bench_ctc_head.py --out benchmarks/results/ctc_head.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn


def one_table(head, x):
    """The earlier formula (speechlm before 2026-12-01): one [C+1, H] table with the blank concatenated."""
    e = head.token_table()
    table = nn.functional.normalize(torch.cat([e, head.blank[None]]), dim=-1)
    return head.log_scale.exp() * (nn.functional.normalize(x, dim=-1) @ table.T)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=13264)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=38, help="adapter frames per clip (3 s at 12.5/s)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    from speechlm.model.ctc import EmbeddingCTCHead, ctc_loss

    torch.manual_seed(0)
    emb = nn.Embedding(49152, 576)
    head = EmbeddingCTCHead(emb)
    head.set_vocab(torch.randperm(49152)[: args.vocab].tolist())
    x0 = torch.randn(args.clips, args.frames, 576)
    lengths = torch.full((args.clips,), args.frames)
    targets = [torch.randint(0, args.vocab, (args.frames // 3,)).tolist() for _ in range(args.clips)]

    def step(fn):
        x = x0.clone().requires_grad_(True)
        loss, _ = ctc_loss(fn(head, x), lengths, targets, head.blank_id)
        loss.backward()
        head.zero_grad(set_to_none=True)
        return float(loss)

    arms = {"one table (before)": one_table, "E apart from the blank (shipped)": lambda h, x: h(x)}
    assert math.isclose(step(arms["one table (before)"]), step(arms["E apart from the blank (shipped)"]), rel_tol=1e-4)
    times = {k: [] for k in arms}
    for _ in range(args.repeats):  # interleaved, so drift in the machine's speed hits both arms alike
        for k, fn in arms.items():
            t0 = time.perf_counter()
            step(fn)
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    res = {"what": __doc__.splitlines()[0], "command": "python " + " ".join(["benchmarks/bench_ctc_head.py", *(argv or sys.argv[1:])]),
           "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "sizes": vars(args),
           "best_s": best, "speedup": best["one table (before)"] / best["E apart from the blank (shipped)"]}
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

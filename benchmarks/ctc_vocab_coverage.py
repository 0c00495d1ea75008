"""How thin a demo corpus spreads its tokens, and what a frequent-piece CTC head (`model.ctc_vocab_size`) does to it
(issue 9): token types in the training transcripts, how often the open-English dev tokens occur in them, and per
N the head's size, the target length and the share of clips CTC cannot align at 12.5 frames/s.

    python benchmarks/ctc_vocab_coverage.py --train runs/demo_i/data/train.jsonl --dev runs/demo_i/data/real/test_open.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--llm", default="smollm2-135m-instruct")
    ap.add_argument("--sizes", nargs="*", type=int, default=[1000, 2000, 4000, 8000])
    ap.add_argument("--frame-rate", type=float, default=12.5, help="adapter frames per second (x4 stacking)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ctc_vocab_coverage.json"))
    a = ap.parse_args()

    from speechlm.backbones.llm import load_llm
    from speechlm.data.manifest import read_manifest
    from speechlm.model.ctc import EmbeddingCTCHead, frequent_vocab

    llm, tok = load_llm(a.llm)
    train = [c for c in read_manifest(a.train) if c.text and c.text.strip()]
    dev = [c for c in read_manifest(a.dev) if c.text and c.text.strip()]
    ids = lambda text: tok(text.strip(), add_special_tokens=False).input_ids  # noqa: E731
    targets = [ids(c.text) for c in train]
    counts = Counter(t for x in targets for t in x)
    dev_ids = [t for c in dev for t in ids(c.text)]

    def infeasible(classes: list[list[int]]) -> float:  # CTC needs a frame per label, plus one between repeats
        bad = sum(len(x) + sum(p == q for p, q in zip(x, x[1:])) > int(c.duration * a.frame_rate)
                  for x, c in zip(classes, train))
        return bad / len(train)

    rec = {"command": " ".join(["python", *sys.argv]), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
           "train_clips": len(train), "train_tokens": sum(counts.values()), "train_token_types": len(counts),
           "dev_tokens": len(dev_ids), "dev_tokens_seen": sum(t in counts for t in dev_ids),
           "dev_tokens_seen_5x": sum(counts[t] >= 5 for t in dev_ids),
           "dev_tokens_seen_20x": sum(counts[t] >= 20 for t in dev_ids),
           "full_vocab_infeasible_share": infeasible(targets), "sizes": []}
    for n in a.sizes:
        head = EmbeddingCTCHead(llm.get_input_embeddings(), tokenizer=tok)
        head.set_vocab(frequent_vocab(targets, n, tok))
        classes = [head.to_classes(x) for x in targets]
        rec["sizes"].append({"ctc_vocab_size": n, "head_classes": head.vocab_size,
                             "train_target_length": sum(map(len, classes)), "infeasible_share": infeasible(classes)})
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does speaker perturbation teach the unit vocoder to voice other speakers' units? (issue 10, "other speakers")

One fitted tokenizer; for each value of ``vocoder.speaker_perturb`` a vocoder is trained on the same one-voice
manifest for the same minutes, beside a copy of the tokenizer, and the units rungs of the resynthesis ladder are
scored on the same held-out clips: the vocoder's own voice (held-out sentences), RAVDESS actors and the spoken
digits' held-out speakers (split from a real test manifest by id prefix). Whisper tiny.en judges.

    python benchmarks/bench_vocoder_perturb.py --tokenizer runs/sgpt_h/tokenizer \
        --voice runs/sgpt_h/data/voice/manifest.jsonl --heldout runs/sgpt_h/data/heldout/manifest.jsonl \
        --real-test runs/sgpt_h/data/real/test.jsonl --copies 0 2 --minutes 6 --n 20 \
        --out runs/voc_perturb --results benchmarks/results/vocoder_perturb.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
import shutil
import sys
import time
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.safetensors", "prepare.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="fitted tokenizer folder (its own vocoder is not used)")
    ap.add_argument("--voice", required=True, help="the vocoder's one-voice manifest")
    ap.add_argument("--heldout", required=True, help="held-out sentences in the vocoder's voice")
    ap.add_argument("--real-test", default="", help="real test manifest: its ravdess/ and fsdd/ clips become subsets")
    ap.add_argument("--copies", type=int, nargs="+", default=[0, 2], help="vocoder.speaker_perturb values")
    ap.add_argument("--minutes", type=float, default=6.0, help="vocoder training minutes, each")
    ap.add_argument("--n", type=int, default=20, help="clips per subset")
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", required=True)
    args = ap.parse_args(argv)

    from speechlm.config import VocoderConfig
    from speechlm.corpora.speech_tokens import prepare_vocoder
    from speechlm.data.manifest import read_manifest
    from speechlm.evaluation.resynthesis import run_ladder
    from speechlm.inference.speech_tokens import load_speech_tokens
    from speechlm.inference.transcribe import WhisperBaseline

    def sample(cuts):
        cuts = [c for c in cuts if c.text.strip()]
        return sorted(random.Random(0).sample(cuts, min(args.n, len(cuts))), key=lambda c: c.id)

    subsets = {"own voice (held-out sentences)": sample(read_manifest(args.heldout))}
    if args.real_test:
        real = read_manifest(args.real_test)
        for prefix in ("ravdess", "fsdd"):
            cuts = [c for c in real if c.id.startswith(prefix + "/")]
            if cuts:
                subsets[f"{prefix} (held-out speakers)"] = sample(cuts)
    judge = WhisperBaseline()
    out = Path(args.out)
    arms = []
    for copies in args.copies:
        folder = out / f"copies-{copies}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name in TOKENIZER_FILES:
            if (Path(args.tokenizer) / name).exists():
                shutil.copy2(Path(args.tokenizer) / name, folder / name)
        cfg = VocoderConfig(minutes=args.minutes, speaker_perturb=copies)
        t0 = time.time()
        prepare_vocoder(Path(args.voice), folder, cfg, progress=False)
        prep_s = time.time() - t0
        tok, voc = load_speech_tokens(folder)
        t0 = time.time()
        ladder = run_ladder(tok, voc, subsets, folder / "ladder", rungs=("original", "units", "units+dur"),
                            asr=judge, progress=False)
        log = json.loads((folder / "prepare.json").read_text())["vocoder"]
        arm = {"speaker_perturb": copies, "vocoder_minutes": args.minutes, "clips": log["clips"],
               "re_voiced": log.get("re_voiced", 0), "prepare_vocoder_s": round(prep_s, 1),
               "ladder_s": round(time.time() - t0, 1),
               "subsets": {s: {r: {k: e[k] for k in ("wer", "mcd_db", "f0_rmse_hz", "n") if k in e}
                               for r, e in rungs.items()} for s, rungs in ladder["subsets"].items()}}
        arms.append(arm)
        print(json.dumps(arm), flush=True)
    result = {"what": __doc__.splitlines()[0], "command": "python " + " ".join(sys.argv),
              "date": datetime.date.today().isoformat(), "tokenizer": args.tokenizer,
              "config": dataclasses.asdict(VocoderConfig(minutes=args.minutes)), "arms": arms}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

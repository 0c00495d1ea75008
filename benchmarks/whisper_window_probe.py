"""Why the `whisper-decoder` anchor reads the whole 30-s window (issue 9, item 8): Whisper tiny.en's own decoder,
greedy, on the shared `asr_en` clips, fed three ways: the encoder run on the real length, run on 30 s and cut back
to the speech, and the whole 30-s window (what the anchor adapter does), beside `whisper_transcribe` (HF generate).

    python benchmarks/whisper_window_probe.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default="../shared/data/real")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "whisper_window_probe.json"))
    a = ap.parse_args()

    import torch

    from speechlm.backbones.whisper import load_whisper, whisper_transcribe
    from speechlm.data.audio import load_audio
    from speechlm.evaluation.metrics import wer_details
    from speechlm.model.builders import load_encoder_decoder
    from speechlm.model.encoder import SpeechEncoder
    from speechlm.model.whisper_anchor import build_whisper_decoder_adapter

    root = Path(a.real)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["id"].startswith("asr_en/")]
    waves = [torch.from_numpy(load_audio(str(root / r["path"]))) for r in rows]
    refs = [r["text"] for r in rows]
    enc, dec, gc, wtok = load_encoder_decoder("whisper-tiny.en")
    adapter = build_whisper_decoder_adapter(dec, gc, out_dim=8).eval()  # its greedy decoder only
    rec = {"command": " ".join(["python", *sys.argv]), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "clips": len(rows)}
    for name, speech in [("real_length", SpeechEncoder(enc)), ("30s_cut_to_speech", SpeechEncoder(enc, pad_to_30s=True)),
                         ("whole_30s_window", SpeechEncoder(enc, pad_to_30s=True, keep_window=True))]:
        hyps, t0 = [], time.time()
        with torch.no_grad():
            for w in waves:  # one clip at a time: no padding between clips in the two cut variants
                frames, lengths = speech([w])
                toks, _, _ = adapter.decode(frames, lengths if name == "whole_30s_window" else None)  # the anchor caps by length
                hyps.append(wtok.decode(toks[0], skip_special_tokens=True))
        rec[name] = {"wer": float(wer_details(refs, hyps)["wer"]), "seconds": round(time.time() - t0, 1),
                     "examples": [[r, h] for r, h in list(zip(refs, hyps))[:3]]}
    rec["whisper_transcribe"] = {"wer": float(wer_details(refs, whisper_transcribe(load_whisper(), [w.numpy() for w in waves]))["wer"])}
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({k: (v["wer"] if isinstance(v, dict) else v) for k, v in rec.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

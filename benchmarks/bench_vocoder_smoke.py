"""Does the unit vocoder learn? One Debian voice, stand-in units, a short training, Whisper-scored resynthesis.

    python benchmarks/bench_vocoder_smoke.py --voice slt --clips 300 --k 200 --minutes 5 --batch-seconds 20
        # -> results/vocoder_smoke.json (about 2 min of TTS + targets, the training minutes, 2 min of scoring)

1. Speaks ``--clips`` sentences (speechlm.corpora.synth texts) with one flite or espeak-ng voice into a temporary
   folder (audio is never kept), trimmed of silence at 16 kHz.
2. Stand-in semantic units until the tokenizers land: k-means (K = ``--k``, plain Lloyd in torch, written here
   rather than in the package) of the log-mel of data/mel.py stacked in pairs to 50 Hz, deduplicated with
   durations - the tokenizers' contract.
3. :func:`speechlm.vocoders.train.train_vocoder` on all but ``--eval`` clips for ``--minutes``.
4. Whisper tiny.en WER on the held-out clips of: the originals, WORLD and Griffin-Lim copy synthesis (toplines),
   and the vocoder from the true units with true durations, with predicted durations, and through Griffin-Lim.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing


def speak(texts: list[str], voice: str, folder: Path) -> list[np.ndarray]:
    """flite voice name (slt, kal16, awb, rms) or an espeak-ng voice (en-us+m3) -> 16-kHz trimmed waves."""
    def one(i: int) -> np.ndarray:
        wav = folder / f"{i}.wav"
        if voice in ("slt", "kal16", "awb", "rms"):
            cmd = ["flite", "-voice", voice, "-t", texts[i], "-o", str(wav)]
        else:
            cmd = ["espeak-ng", "-v", voice, "-w", str(wav), "--", texts[i]]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(1), sr, 16000) if sr != 16000 else x.mean(1)
        loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
        x = x[max(0, loud[0] - 1600): loud[-1] + 1600]  # keep 0.1 s of silence each side
        return (0.9 * x / np.abs(x).max()).astype(np.float32)
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(len(texts))))


def stacked_mel(wave: np.ndarray) -> torch.Tensor:
    """log-mel [T, 80] at 100 Hz -> [F, 160] at 50 Hz, F = ceil((N // 160) / 2) (the tokenizers' frame count)."""
    from speechlm.data.mel import log_mel

    m = log_mel(wave)  # [T, 80]
    f = -(-(len(wave) // 160) // 2)
    m = torch.cat([m, m[-1:].expand(max(0, 2 * f - len(m)), -1)])[: 2 * f]  # [2F, 80]
    return m.reshape(f, 160)


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """Plain Lloyd k-means: frames [P, D] -> centroids [K, D] (init: K random frames)."""
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(len(x), generator=g)[:k]].clone()  # [K, D]
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)  # [P]
        sums = torch.zeros_like(c).index_add_(0, a, x)
        counts = torch.bincount(a, minlength=k).float()[:, None]
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
    return c


def dedup(ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    units, counts = torch.unique_consecutive(ids, return_counts=True)
    return units.numpy().astype(np.int64), counts.numpy().astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voice", default="slt")
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--eval", type=int, default=12)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--batch-seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while training (1: see VocoderConfig.threads)")
    ap.add_argument("--out", default=str(HERE / "results" / "vocoder_smoke.json"))
    args = ap.parse_args()

    from speechlm.config import VocoderConfig
    from speechlm.corpora.synth import synthetic_texts
    from speechlm.evaluation.wer import wer_details
    from speechlm.inference.transcribe import WhisperBaseline
    from speechlm.vocoders import griffinlim, world
    from speechlm.vocoders.train import load_vocoder, train_vocoder

    work = Path(tempfile.mkdtemp(prefix="vocbench."))
    try:
        t0 = time.time()
        texts = synthetic_texts(args.clips, seed=1)
        waves = speak(texts, args.voice, work)
        t_tts = time.time() - t0
        feats = [stacked_mel(w) for w in waves]
        train_n = len(waves) - args.eval
        t0 = time.time()
        cent = kmeans(torch.cat(feats[:train_n]), args.k)
        seqs = [dedup(torch.cdist(f, cent).argmin(1)) for f in feats]
        t_km = time.time() - t0
        examples = [(u, d, w) for (u, d), w in zip(seqs, waves)]
        audio_s = sum(len(w) for w in waves[:train_n]) / 16000
        print(f"{len(waves)} clips ({audio_s / 60:.1f} min train audio), TTS {t_tts:.0f} s, k-means {t_km:.0f} s, "
              f"{np.mean([len(u) / len(w) * 16000 for (u, _), w in zip(seqs, waves)]):.1f} units/s", flush=True)
        cfg = VocoderConfig(minutes=args.minutes, batch_seconds=args.batch_seconds, threads=args.threads)
        t0 = time.time()
        voc = train_vocoder(examples[:train_n], args.k, "standin-mel-kmeans", cfg, work / "run")
        t_train = time.time() - t0
        log = [json.loads(x) for x in (work / "run" / "vocoder_log.jsonl").read_text().splitlines()]
        voc = load_vocoder(work / "run")
        held = list(range(train_n, len(waves)))
        refs = [texts[i] for i in held]
        systems = {
            "original": lambda i: waves[i],
            "world copy-synthesis": lambda i: world.copy_synthesis(waves[i]),
            "griffin-lim copy-synthesis": lambda i: griffinlim.copy_synthesis(waves[i]),
            "vocoder world, true durations": lambda i: voc.synthesize(seqs[i][0], seqs[i][1], "world"),
            "vocoder world, predicted durations": lambda i: voc.synthesize(seqs[i][0], None, "world"),
            "vocoder griffin-lim, true durations": lambda i: voc.synthesize(seqs[i][0], seqs[i][1], "griffinlim"),
        }
        asr = WhisperBaseline()
        results = {}
        for name, fn in systems.items():
            t0 = time.time()
            outs = [fn(i) for i in held]
            t_syn = time.time() - t0
            hyps = asr(outs)
            d = wer_details(refs, hyps)
            results[name] = {"wer": round(d["wer"], 4), "synth_s": round(t_syn, 2), "example": hyps[0]}
            print(f"{name:40s} WER {d['wer']:.3f}  ({t_syn:.1f} s to synthesise)  {hyps[0]!r}", flush=True)
        curve = [{k: r[k] for k in ("step", "elapsed_s", "loss", "world", "vuv", "mel", "dur")} for r in log]
        summary = {
            "voice": args.voice, "clips": len(waves), "train_audio_min": round(audio_s / 60, 2), "k": args.k,
            "minutes": args.minutes, "config": dataclasses.asdict(cfg), "steps": log[-1]["step"], "train_s": round(t_train, 1),
            "steps_per_s": round(log[-1]["step"] / log[-1]["elapsed_s"], 3), "reference": refs[0],
            "wer": results, "loss_curve": [r for i, r in enumerate(curve) if i % max(1, len(curve) // 20) == 0 or i == len(curve) - 1],
            "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

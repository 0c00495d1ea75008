"""Choose the unit tokenizer's defaults by measurement: encoder layer x K x (kmeans | vq), scored two ways.

    python benchmarks/bench_units_sweep.py --data runs/units_sweep --out benchmarks/results/units_sweep.json
        # about 35 CPU minutes with the defaults below (2 cores)

1. **Unit ASR** (every config): how much of the words the units keep. A tiny probe (unit embedding -> three
   dilated convolutions -> CTC over characters) is trained on the units of the fitting corpus for
   ``--asr-steps`` and scores character and word error on held-out clips (synthetic sentences in unseen voices,
   held-out real RAVDESS / digit speakers).
2. **Resynthesis** (the configs in ``--resynth``): a unit vocoder (``speechlm.vocoders``) trained for
   ``--vocoder-minutes`` on one Debian voice, then Whisper tiny.en's WER on the resynthesised held-out clips,
   with predicted durations (units alone, SpeechGPT's setting) and with the true run lengths.

Encoder features are computed once per layer and shared by every K; each vocoder gets the same budget, so the
ranking (not the absolute WER of a 15-minute vocoder) is what this measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB = " abcdefghijklmnopqrstuvwxyz'"  # CTC targets: normalised characters; blank = 0, chars 1..len


def _chars(text: str) -> list[int]:
    from speechlm.evaluation.wer import normalize_english

    t = normalize_english(text)
    return [VOCAB.index(c) + 1 for c in t if c in VOCAB]


class UnitCTC(nn.Module):
    """Units [U] -> characters: embedding, x2 upsampling (CTC needs more frames than characters), three dilated
    convolutions (a receptive field of ~1 s of units) and a CTC head. About 0.3M parameters and no attention, so
    it trains a few hundred steps a minute on 2 cores: a probe of what the units keep, not a recogniser."""

    def __init__(self, k: int, d: int = 160):
        super().__init__()
        self.emb = nn.Embedding(k + 1, d)  # K = padding
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 5, padding=2 * r, dilation=r) for r in (1, 2, 4))
        self.head = nn.Linear(d, len(VOCAB) + 1)

    def forward(self, units: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.emb(units).repeat_interleave(2, dim=1).transpose(1, 2)  # [B, d, 2U]
        for conv in self.convs:
            x = x + nn.functional.gelu(conv(x))
        return self.head(x.transpose(1, 2)), lengths * 2  # [B, 2U, C], [B]


def _batch(seqs: list[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    x = torch.full((len(seqs), n), k, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.as_tensor(s)
    return x, torch.tensor([len(s) for s in seqs])


def unit_asr(train: list[tuple[np.ndarray, str]], test: dict[str, list[tuple[np.ndarray, str]]], k: int,
             steps: int, seed: int = 0) -> dict:
    """Train :class:`UnitCTC` for ``steps`` (the same for every config, whatever else shares the CPU) and return
    WER/CER per test subset (greedy CTC)."""
    from speechlm.evaluation.wer import cer, wer_details

    torch.manual_seed(seed)
    model = UnitCTC(k)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    data = [(u, _chars(t)) for u, t in train if _chars(t)]
    rng = random.Random(seed)
    t0, done = time.time(), 0
    while done < steps:
        batch = rng.sample(data, min(16, len(data)))
        x, lens = _batch([u for u, _ in batch], k)
        logp, out_lens = model(x, lens)
        targets = torch.tensor([c for _, cs in batch for c in cs])
        loss = nn.functional.ctc_loss(logp.log_softmax(-1).transpose(0, 1), targets, out_lens,
                                      torch.tensor([len(cs) for _, cs in batch]), zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
    model.eval()
    scores = {"steps": done, "seconds": round(time.time() - t0, 1), "final_loss": round(float(loss.detach()), 3)}
    with torch.no_grad():
        for name, pairs in test.items():
            x, lens = _batch([u for u, _ in pairs], k)
            logp, out_lens = model(x, lens)
            hyps = []
            for row, n in zip(logp.argmax(-1), out_lens):
                ids = torch.unique_consecutive(row[: int(n)]).tolist()
                hyps.append("".join(VOCAB[i - 1] for i in ids if i > 0))
            refs = [t for _, t in pairs]
            scores[name] = {"wer": wer_details(refs, hyps)["wer"], "cer": cer(refs, hyps)}
    return scores


def _data(root: Path, n_fit: int, n_voice: int, n_test: int, seed: int) -> dict[str, list]:
    from speechlm.corpora.real import prepare_real_splits
    from speechlm.corpora.speech_tokens import build_voice_corpus
    from speechlm.corpora.synth import build_synthetic_corpus
    from speechlm.data.manifest import read_manifest
    from speechlm.utils import real_data_root

    fit = read_manifest(build_synthetic_corpus(root / "voices", n_utterances=n_fit, seed=seed, text_source="mixed"))
    test = {"synthetic": read_manifest(build_synthetic_corpus(root / "heldout", n_utterances=n_test, seed=seed + 1000,
                                                                 text_source="mixed"))}
    voice = read_manifest(build_voice_corpus(root / "voice", n=n_voice, seed=seed + 7))
    # the vocoder's own voice on unseen sentences: units from other speakers fail (benchmarks/results/units_demo)
    test["own-voice"] = read_manifest(build_voice_corpus(root / "voice_heldout", n=n_test, seed=seed + 2000))
    real = real_data_root()
    if real is not None:
        splits = prepare_real_splits(real, root / "real", seed=seed, max_train_per_source=100)
        fit += [c for c in read_manifest(splits["train"]) if c.labels.get("language", "en") == "en" and c.text.strip()]
        held = read_manifest(splits["test"])
        for corpus in ("ravdess", "fsdd"):
            cuts = [c for c in held if c.id.split("/")[0] == corpus and c.text.strip()]
            test[corpus] = sorted(random.Random(seed).sample(cuts, min(n_test, len(cuts))), key=lambda c: c.id)
    return {"fit": fit, "voice": voice, **{f"test:{k}": v for k, v in test.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="runs/units_sweep")
    ap.add_argument("--out", default="benchmarks/results/units_sweep.json")
    ap.add_argument("--layers", default="2,3,4")
    ap.add_argument("--ks", default="100,500,1000")
    ap.add_argument("--vq", default="4:500", help="LAYER:K of the vq tokenizer(s) to add, comma-separated ('' for none)")
    ap.add_argument("--vq-minutes", type=float, default=6.0)
    ap.add_argument("--n-fit", type=int, default=500)
    ap.add_argument("--n-voice", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=25)
    ap.add_argument("--asr-steps", type=int, default=300)
    ap.add_argument("--vocoder-minutes", type=float, default=4.0)
    ap.add_argument("--resynth", default="kmeans-L2-K500,kmeans-L3-K500,kmeans-L4-K500",
                    help="configs that also get a vocoder and the resynthesis WER (each costs --vocoder-minutes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from speechlm.config import UnitsConfig, VocoderConfig
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import write_manifest
    from speechlm.evaluation.wer import wer_details
    from speechlm.inference.transcribe import WhisperBaseline
    from speechlm.tokenizers import kmeans
    from speechlm.tokenizers.dedup import dedup
    from speechlm.tokenizers.layer_features import LayerFeatures
    from speechlm.tokenizers.registry import fit_tokenizer
    from speechlm.vocoders.train import train_vocoder

    root = Path(args.data)
    t0 = time.time()
    sets = _data(root, args.n_fit, args.n_voice, args.n_test, args.seed)
    waves = {name: [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts] for name, cuts in sets.items()}
    texts = {name: [c.text for c in cuts] for name, cuts in sets.items()}
    tests = [n for n in sets if n.startswith("test:")]
    data_s = time.time() - t0
    asr = WhisperBaseline()
    ref_wer = {n: wer_details(texts[n], asr(waves[n]))["wer"] for n in tests}
    print(f"data {data_s / 60:.1f} min; Whisper on the original test audio: {ref_wer}", flush=True)

    def score(name: str, encode, k: int) -> dict:
        """unit ASR + a short vocoder + resynthesis WER for one tokenizer (``encode(wave) -> units [F]``)."""
        units = {n: [encode(w) for w in ws] for n, ws in waves.items()}
        dd = {n: [dedup(u) for u in us] for n, us in units.items()}
        rate = float(np.mean([len(u) / (len(w) / 16000) for (u, _), w in zip(dd["fit"], waves["fit"])]))
        res = {"units_per_s_dedup": round(rate, 1),
               "unit_asr": unit_asr(list(zip([u for u, _ in dd["fit"]], texts["fit"])),
                                    {n[5:]: list(zip([u for u, _ in dd[n]], texts[n])) for n in tests}, k,
                                    args.asr_steps, args.seed)}
        if name not in args.resynth.split(","):
            print(name, json.dumps(res), flush=True)
            return res
        t = time.time()
        voc = train_vocoder([(u, d, w) for (u, d), w in zip(dd["voice"], waves["voice"])], k=k, tokenizer_hash=name,
                            cfg=VocoderConfig(minutes=args.vocoder_minutes, seed=args.seed, threads=1), out=root / "vocoders" / name,
                            progress=False)
        res["vocoder_seconds"] = round(time.time() - t, 1)
        for n in tests:
            for label, durs in (("predicted", None), ("true", True)):
                audio = [voc.synthesize(u, d if durs else None, backend="world") for u, d in dd[n]]
                res.setdefault("resynthesis_wer", {}).setdefault(n[5:], {})[label] = wer_details(texts[n], asr(audio))["wer"]
        print(name, json.dumps(res), flush=True)
        return res

    results: dict[str, dict] = {}
    for layer in [int(x) for x in args.layers.split(",") if x]:
        lf = LayerFeatures("whisper-tiny.en", layer)
        t = time.time()
        feats = {n: [f.numpy() for f in lf(ws)] for n, ws in waves.items()}
        feat_s = time.time() - t
        pool = np.concatenate(feats["fit"])  # [N, D]
        idx = np.random.default_rng(args.seed).permutation(len(pool))[:100_000]
        for k in [int(x) for x in args.ks.split(",") if x]:
            t = time.time()
            cents = kmeans.fit(torch.from_numpy(pool[idx]), k, seed=args.seed, iters=25)
            fit_s = time.time() - t
            lookup = {n: [kmeans.assign(torch.from_numpy(f), cents).numpy() for f in fs] for n, fs in feats.items()}
            by_wave = {id(w): u for n in waves for w, u in zip(waves[n], lookup[n])}
            name = f"kmeans-L{layer}-K{k}"
            results[name] = {"kind": "kmeans", "layer": layer, "k": k, "fit_seconds": round(fit_s, 1),
                             "feature_seconds": round(feat_s, 1), **score(name, lambda w: by_wave[id(w)], k)}
    for spec in [s for s in args.vq.split(",") if s]:
        layer, k = map(int, spec.split(":"))
        name = f"vq-L{layer}-K{k}"
        fit_path = root / "fit.jsonl"
        write_manifest(fit_path, sets["fit"])
        t = time.time()
        tok = fit_tokenizer(UnitsConfig(kind="vq", layer=layer, k=k, seed=args.seed, dedup=False, vq_minutes=args.vq_minutes),
                            fit_path, root / "tokenizers" / name, progress=False)
        fit_s = time.time() - t
        results[name] = {"kind": "vq", "layer": layer, "k": k, "fit_seconds": round(fit_s, 1),
                         **score(name, lambda w: tok.encode(w).units, k)}
    out = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "date": time.strftime("%Y-%m-%d"), "whisper_on_original": ref_wer, "data_minutes": round(data_s / 60, 1),
           "settings": vars(args), "results": results, "minutes_total": round((time.time() - t0) / 60, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    best = min(results, key=lambda n: sum(v["cer"] for v in results[n]["unit_asr"].values() if isinstance(v, dict)))
    print(f"best by unit-ASR CER: {best}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``speechlm prepare units|vocoder|voice``: fit a speech tokenizer on a manifest, tokenize the manifest, train a
unit vocoder beside the tokenizer, and build the single-voice corpus that vocoder learns from.

A tokenizer folder is the unit of exchange of the discrete path::

    OUT/tokenizer.json, tokenizer.safetensors   the tokenizer (speechlm.tokenizers)
    OUT/units/<manifest>.jsonl                   every clip of a manifest as units + durations (+ acoustic streams)
    OUT/vocoder/                                 the unit vocoder (speechlm.vocoders), trained on OUT's units
    OUT/prepare.json                             what was run and how long each part took

The folder alone turns speech into units and units back into sound
(:func:`speechlm.inference.speech_tokens.load_speech_tokens`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from speechlm.config import UnitsConfig, VocoderConfig
from speechlm.utils import write_json, write_jsonl

#: The one Debian voice the default unit vocoder speaks with (CMU ARCTIC's slt, shipped with flite): SpeechGPT's
#: vocoder is single-speaker too (LJSpeech), and one voice is what a 15-minute CPU vocoder can learn.
DEFAULT_VOICE = "flite:slt"


def build_voice_corpus(out: Path, n: int = 400, seed: int = 0, voice: str = DEFAULT_VOICE, workers: int = 2,
                       progress: bool = True) -> Path:
    """One Debian voice reading ``n`` broad-vocabulary sentences (no augmentation): the vocoder's training set."""
    from speechlm.corpora.synth import build_synthetic_corpus

    return build_synthetic_corpus(out, n_utterances=n, seed=seed, workers=workers, progress=progress,
                                  text_source="mixed", random_word_share=0.2, voices=[voice])


def _read_waves(manifest: Path, limit: int = 0) -> tuple[list[Any], list[np.ndarray]]:
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest

    cuts = read_manifest(manifest)
    cuts = cuts[:limit] if limit else cuts
    waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]
    return cuts, waves


def tokenize_manifest(tokenizer: Any, manifest: Path, out: Path, progress: bool = True) -> Path:
    """Every clip of ``manifest`` as units: ``out`` gets one line per clip (id, text, units, durations, and
    ``streams`` [F][nq] when the tokenizer has acoustic streams). Written atomically."""
    from tqdm.auto import tqdm

    cuts, waves = _read_waves(manifest)
    seqs = []
    for i in tqdm(range(0, len(cuts), 16), desc="tokenizing", unit="batch", disable=not progress):
        seqs += tokenizer.encode_batch(waves[i:i + 16], [c.source or c.id for c in cuts[i:i + 16]])
    rows = []
    for cut, seq in zip(cuts, seqs):
        row = {"id": cut.id, "text": cut.text, "units": seq.units.tolist(), "durations": seq.durations.tolist()}
        if getattr(seq, "streams", None) is not None:
            row["streams"] = seq.streams.tolist()
        rows.append(row)
    write_jsonl(out, rows)
    return out


def prepare_units(manifest: Path, out: Path, cfg: UnitsConfig, progress: bool = True) -> dict[str, Path]:
    """Fit the tokenizer ``cfg`` describes on ``manifest`` into ``out``, then tokenize that manifest."""
    from speechlm.tokenizers.registry import fit_tokenizer

    t0 = time.time()
    tokenizer = fit_tokenizer(cfg, manifest, out, progress=progress)
    fit_s = time.time() - t0
    units = tokenize_manifest(tokenizer, manifest, out / "units" / f"{manifest.stem}.jsonl", progress=progress)
    _log(out, "units", {"manifest": str(manifest), "config": dataclasses.asdict(cfg), "fit_seconds": round(fit_s, 1),
                        "tokenize_seconds": round(time.time() - t0 - fit_s, 1), "hash": tokenizer.hash})
    return {"tokenizer": out, "units": units}


def prepare_vocoder(manifest: Path, tokenizer_dir: Path, cfg: VocoderConfig, progress: bool = True) -> dict[str, Path]:
    """Train the unit vocoder on ``manifest`` (one voice) tokenized by the tokenizer in ``tokenizer_dir``;
    it is saved in ``tokenizer_dir/vocoder``."""
    from speechlm.tokenizers.registry import load_tokenizer
    from speechlm.vocoders.train import train_vocoder

    tokenizer = load_tokenizer(tokenizer_dir)
    t0 = time.time()
    cuts, waves = _read_waves(manifest)
    examples = [(units, durations, wave) for (units, durations), wave in zip(
        _unit_runs(tokenizer, waves, [c.source or c.id for c in cuts], "tokenizing the voice", progress), waves)]
    if cfg.speaker_perturb:
        examples += perturbed_examples(tokenizer, cuts, waves, cfg, progress)
    tok_s = time.time() - t0
    train_vocoder(examples, k=tokenizer.k, tokenizer_hash=tokenizer.hash, cfg=cfg, out=tokenizer_dir, progress=progress)
    _log(tokenizer_dir, "vocoder", {"manifest": str(manifest), "config": dataclasses.asdict(cfg), "clips": len(waves),
                                    "re_voiced": len(examples) - len(waves),
                                    "hours": round(sum(len(w) for w in waves) / 16000 / 3600, 3),
                                    "tokenize_seconds": round(tok_s, 1), "train_seconds": round(time.time() - t0 - tok_s, 1)})
    return {"vocoder": tokenizer_dir / "vocoder"}


PERTURB_F0 = (0.5, 1.7)  # F0 factor range, log-uniform: slt (~180 Hz) to ~90 Hz male and ~300 Hz child voices
PERTURB_FORMANT_EXPONENT = 0.3  # formant factor = F0 factor^0.3 (x 0.85 at half the pitch: a male vocal tract)
PERTURB_FORMANT_JITTER = 0.05  # and x exp(N(0, 0.05)), so pitch and vocal tract do not move in lockstep


def perturbed_examples(tokenizer, cuts: list, waves: list[np.ndarray], cfg: VocoderConfig,
                       progress: bool = True) -> list[tuple]:
    """``cfg.speaker_perturb`` re-voiced copies of each clip (:func:`speechlm.vocoders.world.perturb_speaker`),
    tokenized: (their units, their run lengths, the *original* wave), so the vocoder maps another voice's units
    to its own voice's features. Seeded by ``cfg.seed``."""
    from speechlm.vocoders.world import perturb_speaker

    rng = np.random.default_rng(cfg.seed + 1)
    jobs = []  # (clip index, F0 factor, formant factor)
    for i in range(len(waves)):
        for _ in range(cfg.speaker_perturb):
            f0 = float(np.exp(rng.uniform(*np.log(PERTURB_F0))))
            jobs.append((i, f0, f0 ** PERTURB_FORMANT_EXPONENT * float(np.exp(rng.normal(0, PERTURB_FORMANT_JITTER)))))
    voiced = [perturb_speaker(waves[i], f0, fm, cfg.f0_method) for i, f0, fm in jobs]
    names = [f"{cuts[i].source or cuts[i].id} (re-voiced F0 x{f0:.2f}, formants x{fm:.2f})" for i, f0, fm in jobs]
    runs = _unit_runs(tokenizer, voiced, names, "tokenizing the re-voiced copies", progress)
    return [(units, durations, waves[i]) for (units, durations), (i, _, _) in zip(runs, jobs)]


def _unit_runs(tokenizer, waves: list[np.ndarray], names: list[str], desc: str, progress: bool) -> list[tuple]:
    """(units, run lengths) of each wave, tokenized 16 at a time."""
    from tqdm.auto import tqdm

    from speechlm.tokenizers.dedup import unit_runs

    out = []
    for i in tqdm(range(0, len(waves), 16), desc=desc, unit="batch", disable=not progress):
        out += [unit_runs(tokenizer, seq) for seq in tokenizer.encode_batch(waves[i:i + 16], names[i:i + 16])]
    return out


def _log(folder: Path, part: str, info: dict) -> None:
    """Record in ``folder/prepare.json`` what ran for ``part`` and how long it took (kept across parts)."""
    path = folder / "prepare.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    done[part] = info
    write_json(path, done)

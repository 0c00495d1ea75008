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
    from tqdm.auto import tqdm

    from speechlm.tokenizers.dedup import unit_runs
    from speechlm.tokenizers.registry import load_tokenizer
    from speechlm.vocoders.train import train_vocoder

    tokenizer = load_tokenizer(tokenizer_dir)
    t0 = time.time()
    cuts, waves = _read_waves(manifest)
    examples = []
    for i in tqdm(range(0, len(waves), 16), desc="tokenizing the voice", unit="batch", disable=not progress):
        for seq, wave in zip(tokenizer.encode_batch(waves[i:i + 16], [c.source or c.id for c in cuts[i:i + 16]]), waves[i:i + 16]):
            units, durations = unit_runs(tokenizer, seq)
            examples.append((units, durations, wave))
    tok_s = time.time() - t0
    train_vocoder(examples, k=tokenizer.k, tokenizer_hash=tokenizer.hash, cfg=cfg, out=tokenizer_dir, progress=progress)
    _log(tokenizer_dir, "vocoder", {"manifest": str(manifest), "config": dataclasses.asdict(cfg), "clips": len(examples),
                                    "hours": round(sum(len(w) for w in waves) / 16000 / 3600, 3),
                                    "tokenize_seconds": round(tok_s, 1), "train_seconds": round(time.time() - t0 - tok_s, 1)})
    return {"vocoder": tokenizer_dir / "vocoder"}


def _log(folder: Path, part: str, info: dict) -> None:
    """Record in ``folder/prepare.json`` what ran for ``part`` and how long it took (kept across parts)."""
    path = folder / "prepare.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    done[part] = info
    write_json(path, done)

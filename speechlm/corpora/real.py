"""Speaker-disjoint train/test manifests from the shared real-speech folder.

The shared folder (``shared/data/real``, see its README) holds small public corpora. The parts with
English transcripts are used here:

* ``fsdd`` - Free Spoken Digit Dataset: six male speakers saying single digits ("zero" .. "nine").
* ``ravdess`` - 18 actors (9 female, 9 male) saying two fixed sentences in eight emotions.
* ``asr_en`` - 25 varied English clips (LibriVox, LJSpeech, AMI, ...), open vocabulary.

fsdd and ravdess are split *by speaker*: ``test_speakers_per_source`` speakers of each source go to
``test.jsonl`` and never appear in ``train.jsonl``, so test scores measure generalisation to new
voices rather than memorised ones. Their vocabularies are tiny (ten digits, two sentences), so a
model can score well on ``test.jsonl`` by recognising *which* known utterance it hears;
``test_open.jsonl`` (all of asr_en, never trained on) is the honest open-vocabulary check and should
be reported separately.

Labels (gender, emotion, digit, ...) are kept, plus ``corpus`` (the source part). Audio paths are
absolute so the manifests can live anywhere; the audio itself is never copied.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from speechlm.data.manifest import Cut, iter_manifest, write_manifest
from speechlm.utils import real_data_root, write_json

__all__ = ["prepare_real_splits", "SPLIT_SOURCES", "OPEN_SOURCES"]

SPLIT_SOURCES = ("fsdd", "ravdess")
"""Sources split by speaker into train/test."""
OPEN_SOURCES = ("asr_en",)
"""Sources that go entirely to test_open (held out, open vocabulary)."""


def _corpus(cut: Cut) -> str:
    return cut.id.split("/", 1)[0]


def _pick_test_speakers(speakers: dict[str, str | None], k: int, rng: np.random.Generator) -> list[str]:
    """Pick ``k`` speakers, alternating genders where the source has both (so a two-speaker test set
    of RAVDESS is one woman and one man, not possibly two men)."""
    by_gender: dict[str, list[str]] = defaultdict(list)
    for spk in sorted(speakers):
        by_gender[speakers[spk] or "unknown"].append(spk)
    queues = {g: [s[j] for j in rng.permutation(len(s))] for g, s in sorted(by_gender.items())}
    order = [g for g in sorted(queues)]
    order = [order[j] for j in rng.permutation(len(order))]
    picked: list[str] = []
    while len(picked) < k and any(queues.values()):
        for g in order:
            if queues[g] and len(picked) < k:
                picked.append(queues[g].pop(0))
    return sorted(picked)


def prepare_real_splits(
    real_root: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    test_speakers_per_source: int = 2,
    seed: int = 0,
    max_train_per_source: int | None = None,
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``test.jsonl`` and ``test_open.jsonl`` into ``out_dir``.

    Args:
        real_root: the shared real-data folder; None means :func:`speechlm.utils.real_data_root`.
        out_dir: where the manifests (and ``splits.json``, listing speakers and counts) go.
        test_speakers_per_source: speakers of each split source held out for ``test.jsonl``
            (fsdd has 6 speakers, ravdess 18; at least one speaker always stays in train).
        seed: chooses the test speakers and the training subsample.
        max_train_per_source: cap on training clips per source, sampled deterministically (the test
            sets are never capped, so scores stay comparable across caps).

    Returns:
        ``{"train": path, "test": path, "test_open": path}``.

    Raises:
        FileNotFoundError: no real-data folder given or found.
    """
    root = Path(real_root) if real_root is not None else real_data_root()
    if root is None or not (root / "manifest.jsonl").exists():
        raise FileNotFoundError(f"real-speech manifest not found (looked in {root}); "
                                "set SPEECHLM_REAL_DATA or pass real_root")
    by_source: dict[str, list[Cut]] = defaultdict(list)
    for cut in iter_manifest(root / "manifest.jsonl"):
        src = _corpus(cut)
        if src in SPLIT_SOURCES or src in OPEN_SOURCES:
            if not cut.text.strip():
                continue  # ASR splits need a transcript
            cut.labels["corpus"] = src
            by_source[src].append(cut)

    train: list[Cut] = []
    test: list[Cut] = []
    info: dict[str, dict] = {}
    for n, src in enumerate(SPLIT_SOURCES):
        cuts = by_source.get(src, [])
        # Separate streams per source and purpose: the test speakers do not depend on the cap,
        # and adding a source later does not reshuffle the existing ones.
        rng = np.random.default_rng([seed, n, 0])
        speakers = {c.speaker: c.labels.get("gender") for c in cuts if c.speaker}
        k = min(test_speakers_per_source, max(0, len(speakers) - 1))
        test_spk = set(_pick_test_speakers(speakers, k, rng))
        src_test = [c for c in cuts if c.speaker in test_spk]
        # Clips without a speaker label cannot be proven disjoint; keep them out of test (none today).
        src_train = [c for c in cuts if c.speaker not in test_spk]
        if max_train_per_source is not None and len(src_train) > max_train_per_source:
            sub = np.random.default_rng([seed, n, 1])
            keep = np.sort(sub.choice(len(src_train), size=max_train_per_source, replace=False))
            src_train = [src_train[j] for j in keep]
        train += src_train
        test += src_test
        info[src] = {
            "test_speakers": sorted(test_spk),
            "train_speakers": sorted({c.speaker for c in src_train if c.speaker}),
            "train_clips": len(src_train),
            "test_clips": len(src_test),
        }
    test_open = [c for src in OPEN_SOURCES for c in by_source.get(src, [])]
    info["open"] = {"sources": list(OPEN_SOURCES), "clips": len(test_open)}

    out = Path(out_dir)
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl", "test_open": out / "test_open.jsonl"}
    for name, cuts in (("train", train), ("test", test), ("test_open", test_open)):
        write_manifest(paths[name], cuts)  # Cut paths are absolute: the manifests work from anywhere
    write_json(out / "splits.json", {"real_root": str(root.resolve()), "seed": seed,
                                     "test_speakers_per_source": test_speakers_per_source,
                                     "max_train_per_source": max_train_per_source, "sources": info})
    return paths

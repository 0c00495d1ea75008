"""``speechlm prepare CORPUS OUT``: write the toolkit's JSONL manifests for a corpus.

Corpus recipes are plain functions in the ``CORPORA`` registry; each writes manifests into ``OUT`` and is
safe to re-run (files already there are kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from speechlm.utils import real_data_root


def _synthetic(out: Path, src: str, n: int, seed: int, workers: int) -> dict[str, Path]:
    from speechlm.data.synth import build_synthetic_corpus

    return {"train": build_synthetic_corpus(out, n_utterances=n, seed=seed, workers=workers)}


def _real(out: Path, src: str, n: int, seed: int, workers: int) -> dict[str, Path]:
    from speechlm.data.real import prepare_real_splits

    root = Path(src) if src else real_data_root()
    if root is None:
        raise FileNotFoundError("real data folder not found: pass SRC (the folder with manifest.jsonl) or set SPEECHLM_REAL_DATA")
    return prepare_real_splits(root, out, seed=seed, max_train_per_source=n or None)


CORPORA: dict[str, Callable[..., dict[str, Path]]] = {"synthetic": _synthetic, "real": _real}
"""Corpus recipes keyed by name."""


def prepare(corpus: str, out: str, src: str = "", n: int = 200, seed: int = 0, workers: int = 2) -> dict[str, Path]:
    """Prepare a corpus into JSONL manifests: `synthetic` (Debian TTS voices) or `real` (the shared real-speech folder).

    corpus: synthetic or real.
    out: output folder for manifests (and audio, for synthetic).
    src: source folder (real: the folder holding manifest.jsonl; default ../shared/data/real).
    n: synthetic: utterances to synthesize; real: cap on training clips per source (0: no cap).
    seed: seed for synthesis plans and speaker splits.
    workers: parallel synthesis processes.
    """
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}")
    paths = CORPORA[corpus](Path(out), src, n, seed, workers)
    for split, path in paths.items():
        print(f"{split}\t{path}", flush=True)
    return paths

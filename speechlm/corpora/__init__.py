"""Corpus recipes: ``speechlm prepare CORPUS SRC OUT`` turns a corpus as downloaded into JSONL manifests.

:data:`CORPORA` maps a name to a recipe ``fn(src, out, workers=2, progress=True) -> {split: manifest}``
(keyword ``strict=True`` turns unusable audio from a warning into an error); :data:`CORPUS_DOCS`
gives each one's expected layout in a line. Every recipe runs the same numbered stages:

1. scan and parse the corpus's own metadata (transcripts, TSV/CSV tables, file-name conventions) into
   cuts, each remembering the ``file:line`` it came from; a malformed line raises
   :class:`CorpusError` naming it;
2. probe the audio headers in parallel (``workers`` threads, a tqdm bar) for durations; missing,
   unreadable or too-short files are skipped with a warning and listed in ``OUT/rejected.tsv``;
3. write ``OUT/<split>.jsonl`` atomically, plus ``OUT/corpus.json`` (counts, hours, speakers).

Re-running is safe: stage 3 always rewrites the manifests atomically, and stage 2 reuses
``OUT/.probe_cache.json`` for files whose size and mtime are unchanged, so a re-run costs one scan.
Audio stays where it is (manifest paths absolute) except for ``hf``, which decodes into ``OUT/audio``.

Every label the corpus carries is kept under the toolkit's field names (``text``, ``speaker``,
``gender``, ``age``, ``emotion``, ``emotion_intensity``, ``event``, ``language``, ``accent``,
``digit``...), using the same names and values as the shared real data where both have them
(``gender`` male/female, ``speaker`` prefixed by the corpus: ``libri-103``, ``ravdess-01``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from speechlm.corpora import commonvoice, emotion, events, folder, fsdd, hf, kaldi, librispeech, lhotse_io, vctk
from speechlm.corpora._common import CorpusError, probe_durations
from speechlm.corpora.lhotse_io import export_lhotse

__all__ = ["CORPORA", "CORPUS_DOCS", "CorpusError", "export_lhotse", "probe_durations"]

CORPORA: dict[str, Callable[..., dict[str, Path]]] = {
    "librispeech": librispeech.prepare_librispeech,
    "commonvoice": commonvoice.prepare_commonvoice,
    "vctk": vctk.prepare_vctk,
    "cremad": emotion.prepare_cremad,
    "ravdess": emotion.prepare_ravdess,
    "esc50": events.prepare_esc50,
    "vocalsound": events.prepare_vocalsound,
    "fsdd": fsdd.prepare_fsdd,
    "kaldi": kaldi.prepare_kaldi,
    "folder": folder.prepare_folder,
    "hf": hf.prepare_hf,
    "lhotse": lhotse_io.prepare_lhotse,
}
"""Corpus recipes by name: ``fn(src, out, workers=2, progress=True) -> {split: manifest path}``."""

CORPUS_DOCS: dict[str, str] = {
    "librispeech": librispeech.DOC,
    "commonvoice": commonvoice.DOC,
    "vctk": vctk.DOC,
    "cremad": emotion.CREMAD_DOC,
    "ravdess": emotion.RAVDESS_DOC,
    "esc50": events.ESC50_DOC,
    "vocalsound": events.VOCALSOUND_DOC,
    "fsdd": fsdd.DOC,
    "kaldi": kaldi.DOC,
    "folder": folder.DOC,
    "hf": hf.DOC,
    "lhotse": lhotse_io.DOC,
}
"""One line per recipe: the layout it expects under SRC."""

"""Mozilla Common Voice (commonvoice.mozilla.org): crowd-read sentences in 100+ languages.

Layout (SRC is a language folder, ``cv-corpus-<version>/``, or the folder above it)::

    cv-corpus-<version>/<locale>/{train,dev,test,validated}.tsv      tab-separated, unquoted, with a header:
        client_id  path  sentence  up_votes  down_votes  age  gender  accents  variant  locale  segment ...
    cv-corpus-<version>/<locale>/clips/<path>                        common_voice_<locale>_<n>.mp3

MP3 is read by libsndfile >= 1.1 (soundfile); files are used in place, never converted. The TSV's
``path`` column is taken as written, so a copy converted to ``.wav`` works if its TSVs say ``.wav``.
``other.tsv`` and ``invalidated.tsv`` (unreviewed / rejected recordings) are not prepared.
With one language folder the splits are ``train``, ``dev``, ``test``, ``validated``; with several,
``<locale>_<split>``.

Labels: ``text`` (``sentence``), ``speaker`` (``cv-<client_id>``), ``gender`` (``male_masculine`` ->
``male``, ``female_feminine`` -> ``female``, others kept), ``age_bucket`` (``age``: ``twenties``, ...; a
bucket, not years), ``accent`` (``accents``, or ``accent`` in old releases), ``language`` (``locale``
column, else the folder name), ``variant`` and ``sentence_domain`` where given. Empty values are omitted.
"""

from __future__ import annotations

import csv
from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, gender, log, read_table
from speechlm.data.manifest import Cut

DOC = "cv-corpus-*/<lang>/{train,dev,test,validated}.tsv + clips/*.mp3 (client_id, path, sentence, age, gender, accents, locale)"

SPLITS = ("train", "dev", "test", "validated")
"""TSVs prepared, when present."""


def _is_lang_dir(d: Path) -> bool:
    return (d / "clips").is_dir() and any((d / f"{s}.tsv").is_file() for s in SPLITS)


def _lang_dirs(src: Path) -> list[Path]:
    if _is_lang_dir(src):
        return [src]
    found = []
    for d in [src, *sorted(c for c in src.iterdir() if c.is_dir())]:
        found += [c for c in sorted(d.iterdir()) if c.is_dir() and _is_lang_dir(c)] if d.is_dir() else []
    return list(dict.fromkeys(found))


def _read_tsv(tsv: Path, lang_dir: Path) -> list[Cut]:
    cuts = []
    # Common Voice TSVs are unquoted: a sentence may contain '"', which must not start a quoted field.
    for lineno, row in read_table(tsv, delimiter="\t", required=("path", "sentence"), quoting=csv.QUOTE_NONE):
        if not row["path"]:
            raise CorpusError(f"{tsv}:{lineno}: empty 'path'")
        labels = {}
        if row.get("client_id"):
            labels["speaker"] = f"cv-{row['client_id']}"
        if gender(row.get("gender")):
            labels["gender"] = gender(row.get("gender"))
        if row.get("age"):
            labels["age_bucket"] = row["age"]
        accent = row.get("accents") or row.get("accent")
        if accent:
            labels["accent"] = accent
        labels["language"] = row.get("locale") or lang_dir.name
        for key in ("variant", "sentence_domain"):
            if row.get(key):
                labels[key] = row[key]
        audio = lang_dir / "clips" / row["path"]
        cuts.append(Cut(id=Path(row["path"]).stem, audio=str(audio.resolve()), text=row["sentence"],
                        labels=labels, source=f"{tsv}:{lineno}"))
    return cuts


def prepare_commonvoice(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/<split>.jsonl`` for each of train/dev/test/validated.tsv found."""
    src, out = Path(src), Path(out)
    log("commonvoice", f"stage 1/3: reading TSVs under {src}", progress)
    langs = _lang_dirs(src) if src.is_dir() else []
    if not langs:
        raise CorpusError(f"commonvoice: no folder with clips/ and {'/'.join(SPLITS)}.tsv under {src}; expected {DOC}")
    splits = {}
    for lang_dir in langs:
        for s in SPLITS:
            tsv = lang_dir / f"{s}.tsv"
            if tsv.is_file():
                splits[s if len(langs) == 1 else f"{lang_dir.name}_{s}"] = _read_tsv(tsv, lang_dir)
    return finish("commonvoice", splits, src, out, workers, progress, strict)

"""Any folder of audio plus a CSV/TSV of labels (the generic recipe; also Hugging Face "audiofolder" layouts).

Layout (SRC is the folder, or the table itself)::

    my_corpus/metadata.csv       a header line, then one row per clip:
        file_name,text,speaker,emotion,...      (comma; .tsv files are tab-separated)
    my_corpus/clips/a.wav ...    paths in the table are relative to the table's folder (or absolute)

The table is ``metadata.csv``/``metadata.tsv`` if present, else the only ``*.csv``/``*.tsv`` in SRC
(several: pass the one you mean as SRC). Without any table every audio file under SRC becomes a
label-less cut (id = its path without suffix).

Columns (names matched case-insensitively):

* the audio path: the first of :data:`PATH_COLUMNS` (required);
* the transcript (optional): the first of :data:`TEXT_COLUMNS`;
* ``id`` / ``utt_id`` (optional; default the audio path relative to the table, without suffix);
* ``split`` (optional): rows go to ``OUT/<split>.jsonl`` by its value, else everything to ``all``;
* ``start`` / ``duration`` (optional, seconds): cuts inside longer files;
* every other column becomes a label, its value a string as written (empty cells omitted). Common
  aliases are renamed to the toolkit's names (:data:`ALIASES`: ``speaker_id`` -> ``speaker``, ``sex`` ->
  ``gender``, ``locale`` -> ``language``...) and gender values normalised (``F`` -> ``female``).
"""

from __future__ import annotations

from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, gender, log, read_table, scan_audio
from speechlm.data.manifest import Cut

DOC = "folder of audio + metadata.csv/.tsv (file_name|filename|path|audio column, optional text/id/split/start/duration, other columns = labels)"

PATH_COLUMNS = ("file_name", "filename", "file", "path", "audio", "audio_path", "audio_filepath", "wav", "wav_path")
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text")
ID_COLUMNS = ("id", "utt_id", "utterance_id", "uid", "key")
ALIASES = {"speaker_id": "speaker", "spk": "speaker", "spk_id": "speaker", "client_id": "speaker",
           "sex": "gender", "lang": "language", "locale": "language", "emotion_label": "emotion", "accents": "accent"}
"""Column names renamed to the toolkit's label names."""


def _find_table(src: Path) -> Path | None:
    if src.is_file():
        return src
    for name in ("metadata.csv", "metadata.tsv"):
        if (src / name).is_file():
            return src / name
    tables = sorted(p for p in src.iterdir() if p.suffix.lower() in (".csv", ".tsv") and p.is_file())
    if len(tables) > 1:
        raise CorpusError(f"folder: several tables in {src} ({', '.join(p.name for p in tables)}); pass the one to use as SRC")
    return tables[0] if tables else None


def _number(row: dict, col: str | None, table: Path, lineno: int) -> float | None:
    if col is None or not row[col]:
        return None
    try:
        v = float(row[col])
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise CorpusError(f"{table}:{lineno}: column {col!r}: expected seconds >= 0, got {row[col]!r}")
    return v


def read_folder_table(table: Path) -> dict[str, list[Cut]]:
    """Cuts by split from a metadata table (see the module doc for the columns)."""
    rows = iter(read_table(table))
    first = next(rows, None)
    if first is None:
        raise CorpusError(f"{table}: no rows")
    lower = {c.lower(): c for c in first[1]}
    pick = lambda names: next((lower[n] for n in names if n in lower), None)  # noqa: E731
    path_col = pick(PATH_COLUMNS)
    if path_col is None:
        raise CorpusError(f"{table}:1: no audio path column; name one of {', '.join(PATH_COLUMNS)} (have {list(first[1])})")
    text_col, id_col, split_col = pick(TEXT_COLUMNS), pick(ID_COLUMNS), pick(("split",))
    start_col, dur_col = pick(("start", "offset")), pick(("duration",))
    special = {path_col, text_col, id_col, split_col, start_col, dur_col}
    base = table.parent
    splits: dict[str, list[Cut]] = {}
    for lineno, row in [first, *rows]:
        rel = row[path_col]
        if not rel:
            raise CorpusError(f"{table}:{lineno}: empty {path_col!r}")
        audio = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
        cid = row[id_col] if id_col and row[id_col] else Path(rel).with_suffix("").as_posix()
        labels = {}
        for col, value in row.items():
            if col in special or value == "":
                continue
            key = ALIASES.get(col.lower(), col)
            labels[key] = gender(value) if key == "gender" else value
        cut = Cut(id=cid, audio=str(audio), start=_number(row, start_col, table, lineno) or 0.0,
                  duration=_number(row, dur_col, table, lineno), text=row[text_col] if text_col else "",
                  labels=labels, source=f"{table}:{lineno}")
        splits.setdefault((row[split_col] or "all") if split_col else "all", []).append(cut)
    return splits


def prepare_folder(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/<split>.jsonl`` (``all`` unless the table has a split column)."""
    src, out = Path(src), Path(out)
    log("folder", f"stage 1/3: reading {src}", progress)
    table = _find_table(src)
    if table is not None:
        splits = read_folder_table(table)
    else:
        log("folder", f"note: no metadata.csv/.tsv in {src}; every audio file becomes a cut without labels", progress)
        splits = {"all": [Cut(id=p.relative_to(src).with_suffix("").as_posix(), audio=str(p.resolve()), source=str(p))
                          for p in scan_audio(src)]}
    return finish("folder", splits, src, out, workers, progress, strict)

"""A Hugging Face ``datasets`` corpus on disk: a ``save_to_disk`` folder or parquet files.

Layout (SRC is one of)::

    my_ds/dataset_dict.json + my_ds/<split>/...      DatasetDict.save_to_disk: one manifest per split
    my_ds/state.json + dataset_info.json + *.arrow   Dataset.save_to_disk: split "all" (or the dataset's split)
    my_ds/**/<split>-00000-of-00001.parquet          parquet (Hub layout): split from the file name
    my_ds/<config>/<split>/0000.parquet              (the Hub's parquet conversion): split from the folder
    one.parquet                                      a single file: split from its name

The audio column is the first ``Audio`` feature (else the first struct column with ``bytes``/``path``, or
``array``/``sampling_rate``). Audio is never decoded through ``datasets`` (that needs ``torchcodec``):
the raw column is read (``bytes``, else ``path``, absolute or relative to SRC) and decoded with
soundfile, downmixed, resampled to 16 kHz with soxr and written as ``OUT/audio/<split>/<id>.wav``
(16-bit). Stage 2 skips WAVs already written (atomically, so an existing file is complete): delete
``OUT/audio`` to decode again.

Other columns become labels: ``ClassLabel`` ints -> their names, scalars and JSON-able lists/dicts as
they are, binary and other audio/image columns dropped. The transcript is the first of
``text``/``transcript``/``transcription``/``sentence``/``normalized_text``; the id the first of
``id``/``utt_id``/... (else ``<split>-<row>``); aliases as in the ``folder`` recipe (``speaker_id`` ->
``speaker``, as a string; ``locale`` -> ``language``...).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from speechlm.corpora._common import CorpusError, finish, gender, log, ordered_map
from speechlm.corpora.folder import ALIASES, ID_COLUMNS, TEXT_COLUMNS
from speechlm.data.audio import write_audio
from speechlm.data.manifest import Cut

DOC = "HF dataset: save_to_disk folder (dataset_dict.json or state.json) or *.parquet; audio column -> OUT/audio/<split>/*.wav (16 kHz)"

SAMPLE_RATE = 16000
_BATCH = 64


def _parquet_split(path: Path) -> str:
    stem = path.name[: -len(".parquet")]
    m = re.match(r"^(.+?)-\d{5}-of-\d{5}", stem)
    if m:
        return m[1]
    return path.parent.name if stem.isdigit() else stem


def _open(src: Path) -> dict[str, tuple[Any, list[tuple[str, Any]]]]:
    """``{split: (features, [(source name, batch iterable factory), ...])}`` for a saved dataset or parquet."""
    import datasets

    if (src / "dataset_dict.json").is_file() or (src / "state.json").is_file():
        ds = datasets.load_from_disk(str(src))
        parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [(str(ds.split) if ds.split else "all", ds)]
        return {name: (d.features, [(str(src / name), lambda d=d: d.with_format("arrow").iter(batch_size=_BATCH))])
                for name, d in parts}
    files = [src] if src.is_file() and src.suffix == ".parquet" else sorted(src.rglob("*.parquet")) if src.is_dir() else []
    if not files:
        raise CorpusError(f"hf: {src} is neither a save_to_disk folder (dataset_dict.json / state.json) nor parquet; expected {DOC}")
    import pyarrow.parquet as pq

    out: dict[str, tuple[Any, list]] = {}
    for f in files:
        pf = pq.ParquetFile(f)
        features = datasets.Features.from_arrow_schema(pf.schema_arrow)
        split = _parquet_split(f)
        entry = out.setdefault(split, (features, []))
        if entry[0] != features:
            raise CorpusError(f"hf: {f} (split {split!r}) has other columns than {entry[1][0][0]}; several "
                              "dataset configs? pass one config's folder as SRC")
        entry[1].append((str(f), lambda pf=pf: pf.iter_batches(batch_size=_BATCH)))
    return out


def _audio_column(features: Any) -> str:
    import datasets

    for name, feat in features.items():
        if isinstance(feat, datasets.Audio):
            return name
    for name, feat in features.items():
        if isinstance(feat, dict) and ({"bytes", "path"} <= set(feat) or {"array", "sampling_rate"} <= set(feat)):
            return name
    raise CorpusError(f"hf: no audio column (an Audio feature, or a struct with bytes/path) among {list(features)}")


def _label_value(feat: Any, value: Any) -> Any:
    """A column value as a JSON label, or None to drop it."""
    import datasets

    if value is None or isinstance(feat, (datasets.Audio, datasets.Image)) or isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(feat, datasets.ClassLabel):
        return feat.int2str(int(value)) if isinstance(value, int) and value >= 0 else None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _decode(value: Any, base: Path) -> tuple[np.ndarray, int]:
    """The raw audio cell -> (mono float32 at SAMPLE_RATE, source rate)."""
    import soundfile as sf
    import soxr

    if not isinstance(value, dict):
        raise ValueError(f"expected an audio struct, got {type(value).__name__}")
    if value.get("array") is not None:
        x, sr = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
        x = x.T if x.ndim == 2 and x.shape[0] < x.shape[1] else x  # (channels, frames) -> (frames, channels)
    else:
        if value.get("bytes"):
            data: Any = io.BytesIO(value["bytes"])
        elif value.get("path"):
            p = Path(value["path"])
            data = str(p if p.is_absolute() or not (base / p).exists() else base / p)
        else:
            raise ValueError("audio cell has neither bytes nor path")
        x, sr = sf.read(data, dtype="float32", always_2d=True)
    x = x.mean(axis=1) if x.ndim == 2 else x
    if sr != SAMPLE_RATE and x.size:
        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32), sr


def _rows(features: Any, sources: list[tuple[str, Any]]) -> Iterator[tuple[str, int, dict]]:
    for name, batches in sources:
        i = 0
        for batch in batches():
            for row in batch.to_pylist():
                yield name, i, row
                i += 1


def prepare_hf(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/<split>.jsonl`` and ``OUT/audio/<split>/*.wav``."""
    from tqdm.auto import tqdm

    src, out = Path(src), Path(out)
    log("hf", f"stage 1/3: opening {src}", progress)
    base = src if src.is_dir() else src.parent
    splits: dict[str, list[Cut]] = {}
    rejected: list[tuple[str, str, str]] = []
    for split, (features, sources) in _open(src).items():
        audio_col = _audio_column(features)
        cols = {c.lower(): c for c in features}
        text_col = next((cols[c] for c in TEXT_COLUMNS if c in cols), None)
        id_col = next((cols[c] for c in ID_COLUMNS if c in cols), None)
        audio_dir = out / "audio" / re.sub(r"[^\w.\-]+", "_", split)
        audio_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        log("hf", f"stage 2/3: decoding split {split!r} to {SAMPLE_RATE} Hz WAV in {audio_dir}", progress)

        def work(item: tuple[str, int, dict, Path]) -> tuple[str, int, dict, Path, str | None]:
            name, i, row, path = item
            if path.is_file():
                return name, i, row, path, None  # written by an earlier run (atomic writes: it is complete)
            try:
                x, _ = _decode(row[audio_col], base)
                write_audio(path, x, SAMPLE_RATE)
            except Exception as e:  # noqa: BLE001 - any decoder failure is reported with the row
                return name, i, row, path, f"cannot decode audio: {type(e).__name__}: {e}"
            return name, i, row, path, None

        def items() -> Iterator[tuple[str, int, dict, Path]]:
            for name, i, row in _rows(features, sources):
                cid = str(row[id_col]) if id_col and row.get(id_col) not in (None, "") else f"{split}-{len(used):06d}"
                stem = re.sub(r"[^\w.\-]+", "_", cid)
                if stem in used:
                    stem = f"{stem}-{len(used)}"
                used.add(stem)
                row["__id"] = cid
                yield name, i, row, audio_dir / f"{stem}.wav"

        cuts = []
        with tqdm(desc=f"decoding {split}", unit="clip", disable=not progress, dynamic_ncols=True) as bar:
            for name, i, row, path, err in ordered_map(work, items(), workers):
                bar.update(1)
                source = f"{name}: row {i}"
                if err is not None:
                    if strict:
                        raise CorpusError(f"{source}: {err}")
                    rejected.append((split, source, err))
                    continue
                labels = {}
                for col, feat in features.items():
                    if col in (audio_col, text_col, id_col):
                        continue
                    v = _label_value(feat, row.get(col))
                    if v is None or v == "":
                        continue
                    key = ALIASES.get(col.lower(), col)
                    if key == "speaker":
                        v = str(v)  # speaker ids are strings in every manifest (HF often stores ints)
                    labels[key] = gender(v) if key == "gender" and isinstance(v, str) else v
                text = row.get(text_col) if text_col else ""
                cuts.append(Cut(id=row["__id"], audio=str(path.resolve()), text=str(text or ""),
                                labels=labels, source=source))
        splits[split] = cuts
    return finish("hf", splits, src, out, workers, progress, strict, rejected=rejected)

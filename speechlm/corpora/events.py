"""Sound-event corpora: ESC-50 and VocalSound (no transcripts; the label is ``event``).

ESC-50 (Piczak 2015, github.com/karolpiczak/ESC-50)::

    ESC-50-master/audio/1-100032-A-0.wav
    ESC-50-master/meta/esc50.csv             filename,fold,target,category,esc10,src_file,take

Labels: ``event`` (``category``: ``dog``, ``car_horn``...), ``fold`` (1-5, for the official 5-fold
cross-validation), ``esc50_target`` (class index, as in the shared real data), ``esc10`` (bool).

VocalSound (Gong et al. 2022, github.com/YuanGongND/vocalsound)::

    vocalsound_16k/audio_16k/f0003_0_cough.wav    <f|m><speaker>_<take>_<event>.wav

Labels: ``event`` (laughter, sigh, cough, throatclearing, sneeze, sniff), ``speaker``
(``vocalsound-f0003``), ``gender`` (f/m -> female/male).

Both: one split, ``all``. A malformed esc50.csv line raises naming ``file:line``; a VocalSound file name
that breaks the convention raises naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, find_dir, gender, log, read_table, scan_audio
from speechlm.data.manifest import Cut

ESC50_DOC = "ESC-50-master/audio/*.wav + meta/esc50.csv (filename, fold, target, category, esc10)"
VOCALSOUND_DOC = "audio_16k/<f|m><spk>_<n>_<event>.wav (e.g. f0003_0_cough.wav)"

_VOCALSOUND_NAME = re.compile(r"^([fm])(\d+)_(\d+)_([A-Za-z_]+)$")


def prepare_esc50(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/all.jsonl`` from ``meta/esc50.csv``."""
    src, out = Path(src), Path(out)
    log("esc50", f"stage 1/3: reading meta/esc50.csv under {src}", progress)
    root = find_dir(src, lambda d: (d / "meta" / "esc50.csv").is_file() and (d / "audio").is_dir(), names=("ESC-50*",))
    if root is None:
        raise CorpusError(f"esc50: no audio/ + meta/esc50.csv under {src}; expected {ESC50_DOC}")
    meta = root / "meta" / "esc50.csv"
    cuts = []
    for lineno, row in read_table(meta, required=("filename", "fold", "target", "category")):
        if not row["fold"].isdigit() or not row["target"].isdigit() or not row["category"]:
            raise CorpusError(f"{meta}:{lineno}: expected integer fold and target and a category, got "
                              f"fold={row['fold']!r} target={row['target']!r} category={row['category']!r}")
        labels = {"event": row["category"], "fold": int(row["fold"]), "esc50_target": int(row["target"])}
        if row.get("esc10") in ("True", "False"):
            labels["esc10"] = row["esc10"] == "True"
        path = root / "audio" / row["filename"]
        cuts.append(Cut(id=Path(row["filename"]).stem, audio=str(path.resolve()), labels=labels, source=f"{meta}:{lineno}"))
    return finish("esc50", {"all": cuts}, src, out, workers, progress, strict)


def prepare_vocalsound(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/all.jsonl`` from the file names in ``audio_16k/``."""
    src, out = Path(src), Path(out)
    log("vocalsound", f"stage 1/3: parsing file names under {src}", progress)
    root = find_dir(src, lambda d: (d / "audio_16k").is_dir(), names=("vocalsound*",))
    audio_dir = root / "audio_16k" if root is not None else src
    cuts = []
    for path in scan_audio(audio_dir, "*"):
        m = _VOCALSOUND_NAME.match(path.stem)
        if m is None:
            raise CorpusError(f"{path}: file name does not follow <f|m><speaker>_<n>_<event> (e.g. f0003_0_cough)")
        sex, spk, _take, event = m.groups()
        labels = {"event": event.lower(), "speaker": f"vocalsound-{sex}{spk}", "gender": gender(sex)}
        cuts.append(Cut(id=path.stem, audio=str(path.resolve()), labels=labels, source=str(path)))
    if not cuts:
        raise CorpusError(f"vocalsound: no audio in {audio_dir}; expected {VOCALSOUND_DOC}")
    return finish("vocalsound", {"all": cuts}, src, out, workers, progress, strict)

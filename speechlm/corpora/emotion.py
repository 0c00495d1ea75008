"""Acted emotional speech whose labels live in the file names: CREMA-D and RAVDESS.

CREMA-D (Cao et al. 2014, github.com/CheyneyComputerScience/CREMA-D)::

    CREMA-D/AudioWAV/1001_DFA_ANG_XX.wav     <actor>_<sentence>_<emotion>_<level>.wav
    CREMA-D/VideoDemographics.csv            ActorID,Age,Sex,Race,Ethnicity

Labels: ``text`` (the sentence code's sentence, :data:`CREMAD_SENTENCES`), ``emotion``
(:data:`CREMAD_EMOTIONS`), ``emotion_intensity`` (LO/MD/HI/XX -> low/medium/high/unspecified),
``speaker`` (``cremad-1001``), ``gender``, ``age`` (int), ``race``, ``ethnicity``, ``language`` ``en``.

RAVDESS (Livingstone & Russo 2018, zenodo 1188976)::

    Actor_01/03-01-05-02-01-02-01.wav        <modality>-<channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>

(``Actor_XX`` folders optional: a flat folder, like ``shared/data/real/ravdess``, works too.)
Labels: ``text`` (statement 01 "Kids are talking by the door", 02 "Dogs are sitting by the door"),
``emotion`` (:data:`RAVDESS_EMOTIONS`), ``emotion_intensity`` (01 normal, 02 strong), ``speaker``
(``ravdess-01``), ``gender`` (odd actor male, even female), ``vocal_channel`` (speech/song),
``repetition`` (1/2), ``language`` ``en`` - the same names and values as the shared real data.

Both: one split, ``all`` (split by speaker yourself). A file whose name breaks the convention raises
:class:`CorpusError` naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, find_dir, gender, log, read_table, scan_audio
from speechlm.data.manifest import Cut

CREMAD_DOC = "CREMA-D/AudioWAV/<actor>_<SENT>_<EMO>_<LVL>.wav + VideoDemographics.csv (ActorID,Age,Sex,Race,Ethnicity)"
RAVDESS_DOC = "[Actor_XX/]MM-VV-EE-II-SS-RR-AA.wav (modality, vocal channel, emotion, intensity, statement, repetition, actor)"

CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
"""CREMA-D sentence codes -> the sentence spoken."""
CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
"""CREMA-D emotion codes -> emotion labels (the RAVDESS/shared-data spellings)."""
CREMAD_INTENSITIES = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
"""CREMA-D emotion level codes."""

RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
"""RAVDESS emotion codes (third field)."""
RAVDESS_INTENSITIES = {"01": "normal", "02": "strong"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
RAVDESS_CHANNELS = {"01": "speech", "02": "song"}

_CREMAD_NAME = re.compile(r"^(\d+)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def _check(code: str, table: dict, what: str, path: Path) -> str:
    if code not in table:
        raise CorpusError(f"{path}: unknown {what} code {code!r} in the file name (known: {', '.join(table)})")
    return table[code]


def read_cremad_demographics(path: Path) -> dict[str, dict]:
    """``VideoDemographics.csv`` -> ``{actor: {"age", "gender", "race", "ethnicity"}}``."""
    out = {}
    for lineno, row in read_table(path, required=("ActorID", "Age", "Sex")):
        if not row["Age"].isdigit() or gender(row["Sex"]) not in ("male", "female"):
            raise CorpusError(f"{path}:{lineno}: expected an integer Age and Sex Male/Female, got "
                              f"Age={row['Age']!r} Sex={row['Sex']!r}")
        info = {"gender": gender(row["Sex"]), "age": int(row["Age"])}
        for col, key in (("Race", "race"), ("Ethnicity", "ethnicity")):
            if row.get(col):
                info[key] = row[col]
        out[row["ActorID"]] = info
    return out


def prepare_cremad(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/all.jsonl``."""
    src, out = Path(src), Path(out)
    log("cremad", f"stage 1/3: parsing file names under {src}", progress)
    root = find_dir(src, lambda d: (d / "AudioWAV").is_dir(), names=("CREMA-D*",))
    if root is None:
        raise CorpusError(f"cremad: no AudioWAV/ folder under {src}; expected {CREMAD_DOC}")
    demo_file = root / "VideoDemographics.csv"
    demo = read_cremad_demographics(demo_file) if demo_file.is_file() else {}
    if not demo:
        log("cremad", f"note: no {demo_file.name}; no age/gender labels", progress)
    cuts = []
    for path in scan_audio(root / "AudioWAV", "*"):
        m = _CREMAD_NAME.match(path.stem)
        if m is None:
            raise CorpusError(f"{path}: file name does not follow <actor>_<SENTENCE>_<EMOTION>_<LEVEL> (e.g. 1001_DFA_ANG_XX)")
        actor, sent, emo, level = m.groups()
        labels = {"speaker": f"cremad-{actor}", **demo.get(actor, {}),
                  "emotion": _check(emo, CREMAD_EMOTIONS, "emotion", path),
                  "emotion_intensity": _check(level, CREMAD_INTENSITIES, "emotion level", path),
                  "language": "en"}
        cuts.append(Cut(id=path.stem, audio=str(path.resolve()), text=_check(sent, CREMAD_SENTENCES, "sentence", path),
                        labels=labels, source=str(path)))
    return finish("cremad", {"all": cuts}, src, out, workers, progress, strict)


def ravdess_labels(path: Path) -> dict:
    """Text and labels encoded in a RAVDESS file name (raises :class:`CorpusError` naming the file)."""
    m = _RAVDESS_NAME.match(path.stem)
    if m is None:
        raise CorpusError(f"{path}: file name does not follow the RAVDESS convention MM-VV-EE-II-SS-RR-AA (e.g. 03-01-05-02-01-02-01)")
    _modality, channel, emo, intensity, statement, rep, actor = m.groups()
    if not 1 <= int(actor) <= 24:
        raise CorpusError(f"{path}: actor {actor} out of range 01-24")
    return {
        "text": _check(statement, RAVDESS_STATEMENTS, "statement", path),
        "emotion": _check(emo, RAVDESS_EMOTIONS, "emotion", path),
        "emotion_intensity": _check(intensity, RAVDESS_INTENSITIES, "intensity", path),
        "speaker": f"ravdess-{actor}",
        "gender": "male" if int(actor) % 2 else "female",
        "vocal_channel": _check(channel, RAVDESS_CHANNELS, "vocal channel", path),
        "repetition": int(rep),
        "language": "en",
    }


def prepare_ravdess(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/all.jsonl`` from every audio file under SRC (``Actor_XX/`` folders or flat)."""
    src, out = Path(src), Path(out)
    log("ravdess", f"stage 1/3: parsing file names under {src}", progress)
    cuts = []
    for path in scan_audio(src):
        labels = ravdess_labels(path)
        text = labels.pop("text")
        cuts.append(Cut(id=path.stem, audio=str(path.resolve()), text=text, labels=labels, source=str(path)))
    return finish("ravdess", {"all": cuts}, src, out, workers, progress, strict)

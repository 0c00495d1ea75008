"""CSTR VCTK (Yamagishi et al.): ~110 English speakers with various accents reading newspaper sentences.

Layout (SRC is ``VCTK-Corpus/``, ``VCTK-Corpus-0.92/`` or the folder above)::

    VCTK-Corpus/speaker-info.txt        header "ID AGE GENDER ACCENTS REGION [COMMENTS]", then e.g.
                                        "p225  23  F    English    Southern  England" (0.80 writes "225")
    VCTK-Corpus/wav48/p225/p225_001.wav                           (0.80)
    VCTK-Corpus-0.92/wav48_silence_trimmed/p225/p225_001_mic1.flac (0.92: two microphones per utterance)
    VCTK-Corpus/txt/p225/p225_001.txt   one line of text

Version 0.92 records every sentence with two microphones; only ``mic1`` is prepared by default
(``mic=None`` keeps both, ids then differ by their ``_micN`` suffix). Clips without a ``txt`` file (all
of p315, a few others) are kept with an empty transcript, for speaker/accent use; ``validate()`` with
its default ``required_fields=("text",)`` drops them for ASR. One split, ``all`` (VCTK has no official split).

Labels: ``text``, ``speaker`` (``vctk-p225``), ``gender`` (F/M -> female/male), ``age`` (int),
``accent`` (``ACCENTS``), ``region`` (``REGION`` and comments, as written), ``mic`` (0.92),
``language`` ``en``.
"""

from __future__ import annotations

import re
from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, find_dir, gender, log, scan_audio
from speechlm.data.manifest import Cut

DOC = "VCTK-Corpus(-0.92)/wav48(_silence_trimmed)/pXXX/*.wav|flac + txt/pXXX/*.txt + speaker-info.txt (AGE, GENDER, ACCENTS, REGION)"

_AUDIO_DIRS = ("wav48_silence_trimmed", "wav48", "wav22", "wav16", "wav")
_MIC = re.compile(r"^(?P<utt>.+?)_(?P<mic>mic\d)$")


def read_speaker_info(path: Path) -> dict[str, dict]:
    """``speaker-info.txt`` -> ``{"p225": {"gender", "age", "accent", "region"}}``; raises on a malformed line."""
    out: dict[str, dict] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens or tokens[0].upper() == "ID":
                continue
            if len(tokens) < 3 or tokens[2].upper() not in ("F", "M"):
                raise CorpusError(f"{path}:{lineno}: expected 'ID AGE GENDER(F/M) ACCENTS REGION', got {line.strip()[:80]!r}")
            spk = tokens[0] if not tokens[0].isdigit() else f"p{tokens[0]}"
            info: dict = {"gender": gender(tokens[2])}
            if tokens[1].isdigit():
                info["age"] = int(tokens[1])
            if len(tokens) > 3:
                info["accent"] = tokens[3]
            if len(tokens) > 4:
                info["region"] = " ".join(tokens[4:])
            out[spk] = info
    return out


def _is_root(d: Path) -> bool:
    return any((d / a).is_dir() for a in _AUDIO_DIRS) and ((d / "txt").is_dir() or (d / "speaker-info.txt").is_file())


def prepare_vctk(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False,
                 mic: str | None = "mic1") -> dict[str, Path]:
    """Write ``OUT/all.jsonl``."""
    src, out = Path(src), Path(out)
    log("vctk", f"stage 1/3: reading speaker-info.txt and txt/ under {src}", progress)
    root = find_dir(src, _is_root, names=("VCTK-Corpus*",))
    if root is None:
        raise CorpusError(f"vctk: no wav48*/ with txt/ or speaker-info.txt under {src}; expected {DOC}")
    audio_dir = next(root / a for a in _AUDIO_DIRS if (root / a).is_dir())
    info_file = root / "speaker-info.txt"
    speakers = read_speaker_info(info_file) if info_file.is_file() else {}
    cuts, no_text = [], 0
    for path in scan_audio(audio_dir, "*/*"):
        spk, stem = path.parent.name, path.stem
        m = _MIC.match(stem)
        utt, this_mic = (m["utt"], m["mic"]) if m else (stem, None)
        if mic is not None and this_mic is not None and this_mic != mic:
            continue
        txt = root / "txt" / spk / f"{utt}.txt"
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else ""
        no_text += not text
        labels = {"speaker": f"vctk-{spk}", **speakers.get(spk, {}), "language": "en"}
        if this_mic:
            labels["mic"] = this_mic
        cuts.append(Cut(id=stem, audio=str(path.resolve()), text=text, labels=labels,
                        source=str(txt) if txt.is_file() else str(path)))
    if no_text:
        log("vctk", f"note: {no_text} clips have no txt/ transcript (kept with text '')", progress)
    missing = sorted({c.labels["speaker"] for c in cuts if "gender" not in c.labels})
    if missing and speakers:
        log("vctk", f"note: speakers not in speaker-info.txt: {', '.join(missing[:10])}", progress)
    return finish("vctk", {"all": cuts}, src, out, workers, progress, strict)

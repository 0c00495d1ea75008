"""LibriSpeech (Panayotov et al. 2015, openslr.org/12): read English audiobooks, one manifest per split.

Layout (SRC is ``LibriSpeech/``, its parent, or one split folder)::

    LibriSpeech/SPEAKERS.TXT                      ;-comments, then  ID | SEX | SUBSET | MINUTES | NAME
    LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt   lines "<spk>-<chapter>-<nnnn> TEXT"
    LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac   (.wav accepted for converted copies)

Labels: ``text`` (upper-case, as published), ``speaker`` (``libri-<spk>``, as in the shared real data),
``chapter``, ``gender`` (SPEAKERS.TXT F/M -> female/male), ``language`` ``en``.
"""

from __future__ import annotations

from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, find_dir, gender, log, read_keyed_lines
from speechlm.data.manifest import Cut

DOC = "LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-NNNN.flac + <spk>-<chapter>.trans.txt, SPEAKERS.TXT (gender)"


def _is_split(d: Path) -> bool:
    return next(d.glob("*/*/*.trans.txt"), None) is not None


def read_speakers(path: Path) -> dict[str, str]:
    """``SPEAKERS.TXT`` -> ``{speaker id: "female"|"male"}``; a malformed line raises naming ``file:line``."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|", 4)]  # the reader's NAME may itself contain '|'
            if len(fields) < 3 or not fields[0].isdigit() or fields[1].upper() not in ("F", "M"):
                raise CorpusError(f"{path}:{lineno}: expected 'ID | SEX (F/M) | SUBSET | MINUTES | NAME', "
                                  f"got {line.strip()[:80]!r}")
            out[fields[0]] = gender(fields[1])
    return out


def _read_split(split_dir: Path, genders: dict[str, str]) -> list[Cut]:
    cuts: list[Cut] = []
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        spk, chapter = trans.parent.parent.name, trans.parent.name
        prefix = f"{spk}-{chapter}-"
        for lineno, utt, text in read_keyed_lines(trans):
            if not utt.startswith(prefix):
                raise CorpusError(f"{trans}:{lineno}: utterance id {utt!r} does not start with {prefix!r} "
                                  "(the speaker and chapter of its folder)")
            audio = trans.parent / f"{utt}.flac"
            if not audio.exists() and (trans.parent / f"{utt}.wav").exists():
                audio = trans.parent / f"{utt}.wav"
            labels = {"speaker": f"libri-{spk}", "chapter": chapter, "language": "en"}
            if spk in genders:
                labels["gender"] = genders[spk]
            cuts.append(Cut(id=utt, audio=str(audio.resolve()), text=text, labels=labels, source=f"{trans}:{lineno}"))
    return cuts


def prepare_librispeech(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/<split>.jsonl`` for every split folder found (train-clean-100, dev-clean, ...)."""
    src, out = Path(src), Path(out)
    log("librispeech", f"stage 1/3: reading transcripts under {src}", progress)
    if _is_split(src):
        root, split_dirs = src.parent, [src]
    else:
        root = find_dir(src, lambda d: any(_is_split(c) for c in d.iterdir() if c.is_dir()), names=("LibriSpeech",))
        if root is None:
            raise CorpusError(f"librispeech: no <split>/<spk>/<chapter>/*.trans.txt under {src}; expected {DOC}")
        split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and _is_split(d)]
    spk_file = root / "SPEAKERS.TXT"
    genders = read_speakers(spk_file) if spk_file.exists() else {}
    if not genders:
        log("librispeech", f"note: no SPEAKERS.TXT in {root}; no gender labels", progress)
    splits = {d.name: _read_split(d, genders) for d in split_dirs}
    return finish("librispeech", splits, src, out, workers, progress, strict)

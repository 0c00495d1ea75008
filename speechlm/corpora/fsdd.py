"""Free Spoken Digit Dataset (github.com/Jakobovski/free-spoken-digit-dataset): English digits 0-9.

Layout (SRC is the repository folder, its parent, or the folder of recordings itself - a flat folder like
``shared/data/real/fsdd`` works)::

    free-spoken-digit-dataset/recordings/{digit}_{speaker}_{index}.wav    e.g. 7_jackson_32.wav
    free-spoken-digit-dataset/metadata.py     optional: metadata = {"jackson": {"gender": "male", "accent": ...}}

Labels: ``digit`` (int), ``text`` (the digit's word, "zero" .. "nine"), ``speaker`` (``fsdd-jackson``, as
in the shared real data), ``language`` ``en``, plus ``gender`` and ``accent`` from ``metadata.py`` when
present (read with ``ast.literal_eval``, never executed). One split, ``all``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, find_dir, gender, log, scan_audio
from speechlm.data.manifest import Cut

DOC = "recordings/{digit}_{speaker}_{index}.wav (+ optional metadata.py with gender/accent per speaker)"

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)$")


def read_metadata_py(path: Path) -> dict[str, dict]:
    """The ``metadata = {...}`` literal of FSDD's ``metadata.py`` (parsed, not executed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except SyntaxError as e:
        raise CorpusError(f"{path}:{e.lineno}: cannot parse: {e.msg}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "metadata" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise CorpusError(f"{path}:{node.lineno}: 'metadata' is not a plain dict literal") from None
            if isinstance(value, dict):
                return value
    return {}


def prepare_fsdd(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/all.jsonl``."""
    src, out = Path(src), Path(out)
    log("fsdd", f"stage 1/3: parsing file names under {src}", progress)
    root = find_dir(src, lambda d: (d / "recordings").is_dir(), names=("free-spoken-digit-dataset*",), depth=1)
    rec = root / "recordings" if root is not None else src  # else SRC is the (flat) folder of recordings
    meta_file = next((p for p in (rec.parent / "metadata.py", src / "metadata.py") if p.is_file()), None)
    meta = read_metadata_py(meta_file) if meta_file else {}
    cuts = []
    for path in scan_audio(rec, "*"):
        m = _NAME.match(path.stem)
        if m is None:
            raise CorpusError(f"{path}: file name does not follow {{digit}}_{{speaker}}_{{index}} (e.g. 7_jackson_32)")
        digit, spk = int(m[1]), m[2]
        labels: dict = {"digit": digit, "speaker": f"fsdd-{spk}", "language": "en"}
        info = meta.get(spk, {}) if isinstance(meta.get(spk), dict) else {}
        if gender(info.get("gender")):
            labels["gender"] = gender(info.get("gender"))
        if info.get("accent"):
            labels["accent"] = str(info["accent"])
        cuts.append(Cut(id=path.stem, audio=str(path.resolve()), text=DIGIT_WORDS[digit], labels=labels, source=str(path)))
    if not cuts:
        raise CorpusError(f"fsdd: no audio in {rec}; expected {DOC}")
    return finish("fsdd", {"all": cuts}, src, out, workers, progress, strict)

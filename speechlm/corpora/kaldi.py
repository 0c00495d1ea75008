"""A Kaldi data directory (``wav.scp``, ``text``, ``segments``, ``utt2spk``, ``spk2gender``, ``utt2lang``).

Layout (SRC is one data dir, split name = its folder name, or a folder of data dirs, one split each)::

    data/train/wav.scp       <recording-id> <path>              (plain file paths only)
    data/train/segments      <utt-id> <recording-id> <start> <end>    optional; end -1 = to the end
    data/train/text          <utt-id> <transcript>              optional; may be empty for an utterance
    data/train/utt2spk       <utt-id> <speaker>                 optional
    data/train/spk2gender    <speaker> m|f                      optional
    data/train/utt2lang      <utt-id> <language>                optional

Without ``segments`` each recording is one utterance (its id the recording id). ``wav.scp`` entries
that are piped commands (``... |``) or archive offsets (``foo.ark:123``) are rejected with the
``file:line``: write the audio to WAV/FLAC files first (run the pipe's command into a file) and list
their paths. Relative paths are resolved against
the Kaldi recipe folder (the data dir's grandparent, where Kaldi scripts run), else the data dir.

Labels: ``text``, ``speaker`` (utt2spk, as written), ``gender`` (spk2gender m/f -> male/female),
``language`` (utt2lang). Any line naming an unknown utterance/recording raises with its ``file:line``.
"""

from __future__ import annotations

import re
from pathlib import Path

from speechlm.corpora._common import CorpusError, finish, gender, log, read_keyed_lines
from speechlm.data.manifest import Cut

DOC = "data dir: wav.scp (plain paths; piped commands rejected) + optional text, segments, utt2spk, spk2gender, utt2lang"

_ARK = re.compile(r"\.ark(:\d+)?$")


def _keyed(path: Path, allow_empty_value: bool = False) -> dict[str, tuple[int, str]]:
    """A Kaldi ``KEY VALUE`` file as ``{key: (line, value)}``; duplicate keys raise naming both lines."""
    out: dict[str, tuple[int, str]] = {}
    if not path.is_file():
        return out
    for lineno, key, value in read_keyed_lines(path, allow_empty_value=allow_empty_value):
        if key in out:
            raise CorpusError(f"{path}:{lineno}: duplicate key {key!r} (first at line {out[key][0]})")
        out[key] = (lineno, value)
    return out


def _resolve(value: str, data_dir: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    candidates = [data_dir.parent.parent / p, data_dir / p]
    return next((c for c in candidates if c.exists()), candidates[0]).resolve()


def _read_data_dir(d: Path) -> list[Cut]:
    scp = d / "wav.scp"
    scp_lines = _keyed(scp)
    recordings: dict[str, str] = {}
    for rec, (lineno, value) in scp_lines.items():
        if value.endswith("|") or value == "-":
            raise CorpusError(f"{scp}:{lineno}: recording {rec!r} is a piped command ({value[:60]!r}); only plain "
                              "file paths are supported - write the audio to WAV/FLAC files first and list their paths")
        if _ARK.search(value):
            raise CorpusError(f"{scp}:{lineno}: recording {rec!r} points into a Kaldi archive ({value!r}); "
                              "only plain audio file paths are supported")
        recordings[rec] = str(_resolve(value, d))
    texts = _keyed(d / "text", allow_empty_value=True)
    utt2spk = _keyed(d / "utt2spk")
    spk2gender = _keyed(d / "spk2gender")
    utt2lang = _keyed(d / "utt2lang")
    for spk, (lineno, g) in spk2gender.items():
        if g.lower() not in ("m", "f"):
            raise CorpusError(f"{d / 'spk2gender'}:{lineno}: gender of {spk!r} must be m or f, got {g!r}")

    seg_file = d / "segments"
    spans: dict[str, tuple[str, float, float | None, str]] = {}  # utt -> (recording, start, duration, source)
    if seg_file.is_file():
        for utt, (lineno, value) in _keyed(seg_file).items():
            fields = value.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
                if len(fields) != 3:
                    raise ValueError
            except (ValueError, IndexError):
                raise CorpusError(f"{seg_file}:{lineno}: expected '<utt> <recording> <start> <end>', got "
                                  f"{(utt + ' ' + value)[:80]!r}") from None
            if rec not in recordings:
                raise CorpusError(f"{seg_file}:{lineno}: recording {rec!r} is not in {scp.name}")
            if start < 0 or (end != -1 and end <= start):
                raise CorpusError(f"{seg_file}:{lineno}: bad times start={start} end={end}")
            spans[utt] = (rec, start, None if end == -1 else end - start, f"{seg_file}:{lineno}")
    else:
        spans = {rec: (rec, 0.0, None, f"{scp}:{lineno}") for rec, (lineno, _) in scp_lines.items()}

    for name, table in (("text", texts), ("utt2spk", utt2spk), ("utt2lang", utt2lang)):
        for utt, (lineno, _) in table.items():
            if utt not in spans:
                raise CorpusError(f"{d / name}:{lineno}: utterance {utt!r} is not in "
                                  f"{'segments' if seg_file.is_file() else 'wav.scp'}")
    cuts = []
    for utt, (rec, start, duration, source) in spans.items():
        labels = {}
        if utt in utt2spk:
            spk = utt2spk[utt][1]
            labels["speaker"] = spk
            if spk in spk2gender:
                labels["gender"] = gender(spk2gender[spk][1])
        if utt in utt2lang:
            labels["language"] = utt2lang[utt][1]
        cuts.append(Cut(id=utt, audio=recordings[rec], start=start, duration=duration,
                        text=texts[utt][1] if utt in texts else "", labels=labels, source=source))
    return cuts


def prepare_kaldi(src: Path, out: Path, workers: int = 2, progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Write ``OUT/<data dir name>.jsonl`` for SRC or for each data dir inside it."""
    src, out = Path(src), Path(out)
    log("kaldi", f"stage 1/3: reading Kaldi data dir(s) {src}", progress)
    dirs = [src] if (src / "wav.scp").is_file() else sorted(d for d in src.iterdir() if (d / "wav.scp").is_file())
    if not dirs:
        raise CorpusError(f"kaldi: no wav.scp in {src} or its subfolders; expected {DOC}")
    return finish("kaldi", {d.name: _read_data_dir(d) for d in dirs}, src, out, workers, progress, strict)

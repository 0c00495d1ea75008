"""Tiny trees laid out exactly like each real corpus, for the recipes of ``speechlm.corpora``.

Each ``make_<corpus>(root)`` writes 2-4 clips of 0.3-1 s tones (distinct pitch and length per clip)
under ``root`` with the corpus's own folder names, file-name conventions and metadata formats, and
returns ``(src, expected)``: ``src`` is what ``speechlm prepare <corpus> SRC OUT`` takes, ``expected``
is ``{split: {cut id: {"duration": s, "text": ..., <label>: value...}}}`` - what the recipe must produce
(labels listed must match exactly; the manifest may carry more).

``BAD_LINES[corpus](src)`` then corrupts one metadata line (or file name) of that fixture and returns
``(file, line or None)``: the error must name ``file:line`` (or the file, for name conventions).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf

__all__ = ["BAD_LINES", "FIXTURES", "tone", "tone_bytes"]

Expected = dict[str, dict[str, dict[str, Any]]]


def _signal(seconds: float, sr: int, freq: float, channels: int = 1) -> np.ndarray:
    x = (0.4 * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def tone(path: Path, seconds: float, sr: int = 16000, freq: float = 440.0, fmt: str | None = None) -> float:
    """Write a tone (format from the suffix, or ``fmt``: WAV/FLAC/MP3); return its exact duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3"}[path.suffix.lower()]
    x = _signal(seconds, sr, freq)
    sf.write(str(path), x, sr, format=fmt, **({"subtype": "PCM_16"} if fmt in ("WAV", "FLAC") else {}))
    return len(x) / sr


def tone_bytes(seconds: float, sr: int, freq: float, channels: int = 1) -> tuple[bytes, float]:
    """A WAV file's bytes and its duration (for Hugging Face audio cells)."""
    buf = io.BytesIO()
    x = _signal(seconds, sr, freq, channels)
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue(), len(x) / sr


def _can_write_mp3() -> bool:
    try:
        sf.write(io.BytesIO(), np.zeros(1600, np.float32), 16000, format="MP3")
        return True
    except Exception:  # noqa: BLE001 - libsndfile < 1.1 has no MPEG support
        return False


# ---------------------------------------------------------------------------------------- corpora


def make_librispeech(root: Path) -> tuple[Path, Expected]:
    ls = root / "LibriSpeech"
    ls.mkdir(parents=True)
    (ls / "SPEAKERS.TXT").write_text(
        "; Some readers\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "19   | F | train-clean-100  | 25.19 | Kara Shallenberg\n"
        "26   | M | dev-clean        | 25.08 | Denny Sayers | with a bar\n", encoding="utf-8")
    exp: Expected = {"train-clean-100": {}, "dev-clean": {}}
    clips = [("train-clean-100", "19", "198", 0, "NORTHANGER ABBEY", 0.6),
             ("train-clean-100", "19", "198", 1, "THIS LITTLE WORK WAS FINISHED", 0.9),
             ("dev-clean", "26", "495", 0, "CHAPTER ONE", 0.4)]
    lines: dict[Path, list[str]] = {}
    for n, (split, spk, ch, i, text, secs) in enumerate(clips):
        d = ls / split / spk / ch
        utt = f"{spk}-{ch}-{i:04d}"
        dur = tone(d / f"{utt}.flac", secs, freq=300 + 100 * n)
        lines.setdefault(d / f"{spk}-{ch}.trans.txt", []).append(f"{utt} {text}")
        exp[split][utt] = {"duration": dur, "text": text, "speaker": f"libri-{spk}", "chapter": ch,
                           "gender": "female" if spk == "19" else "male", "language": "en"}
    for p, ls_ in lines.items():
        p.write_text("\n".join(ls_) + "\n", encoding="utf-8")
    return ls, exp


def make_commonvoice(root: Path) -> tuple[Path, Expected]:
    lang = root / "cv-corpus-17.0-2024-03-15" / "en"
    ext = ".mp3" if _can_write_mp3() else ".wav"  # MP3 as in the real corpus where libsndfile can write it
    header = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
              "age", "gender", "accents", "variant", "locale", "segment"]
    rows = [
        ("aa11", f"common_voice_en_1{ext}", 'He said "hello" twice.', "twenties", "male_masculine", "United States English", 0.7),
        ("bb22", f"common_voice_en_2{ext}", "The birch canoe slid on the smooth planks.", "fifties", "female_feminine", "", 0.5),
        ("aa11", f"common_voice_en_3{ext}", "It's easy to tell the depth of a well.", "", "", "England English", 0.9),
    ]
    exp: Expected = {"train": {}, "dev": {}, "test": {}, "validated": {}}
    tsv_rows: dict[str, list[str]] = {"train": [], "dev": [], "test": [], "validated": []}
    for n, (client, path, sentence, age, g, accents, secs) in enumerate(rows):
        dur = tone(lang / "clips" / path, secs, sr=48000 if ext == ".mp3" else 16000, freq=250 + 120 * n)
        line = "\t".join([client, path, f"s{n}", sentence, "", "2", "0", age, g, accents, "", "en", ""])
        e: dict[str, Any] = {"duration": dur, "text": sentence, "speaker": f"cv-{client}", "language": "en"}
        if age:
            e["age_bucket"] = age
        if g:
            e["gender"] = {"male_masculine": "male", "female_feminine": "female"}[g]
        if accents:
            e["accent"] = accents
        stem = Path(path).stem
        for split in ("train" if n < 2 else "test", "validated"):
            tsv_rows[split].append(line)
            exp[split][stem] = e
    for split, ls_ in tsv_rows.items():
        (lang / f"{split}.tsv").write_text("\t".join(header) + "\n" + "".join(r + "\n" for r in ls_), encoding="utf-8")
    (lang / "invalidated.tsv").write_text("\t".join(header) + "\n", encoding="utf-8")
    del exp["dev"]  # dev.tsv has only its header: an empty manifest, checked separately
    return root / "cv-corpus-17.0-2024-03-15", exp


def make_vctk(root: Path) -> tuple[Path, Expected]:
    v = root / "VCTK-Corpus-0.92"
    (v / "txt").mkdir(parents=True)
    (v / "speaker-info.txt").write_text(
        "ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n"
        "p225  23  F    English    Southern  England\n"
        "p226  22  M    English    Surrey\n"
        "p315  18  M    American   Connecticut  (alias s5)\n", encoding="utf-8")
    exp: Expected = {"all": {}}
    clips = [("p225", "p225_001", "Please call Stella.", 0.8), ("p226", "p226_002", "Ask her to bring these things.", 0.5),
             ("p315", "p315_003", None, 0.4)]
    info = {"p225": (23, "female", "English", "Southern England"), "p226": (22, "male", "English", "Surrey"),
            "p315": (18, "male", "American", "Connecticut (alias s5)")}
    for n, (spk, utt, text, secs) in enumerate(clips):
        wav = v / "wav48_silence_trimmed" / spk
        dur = tone(wav / f"{utt}_mic1.flac", secs, sr=48000, freq=200 + 90 * n)
        tone(wav / f"{utt}_mic2.flac", secs, sr=48000, freq=210 + 90 * n)  # skipped: mic1 only by default
        if text is not None:
            (v / "txt" / spk).mkdir(exist_ok=True)
            (v / "txt" / spk / f"{utt}.txt").write_text(text + "\n", encoding="utf-8")
        age, g, accent, region = info[spk]
        exp["all"][f"{utt}_mic1"] = {"duration": dur, "text": text or "", "speaker": f"vctk-{spk}", "age": age,
                                     "gender": g, "accent": accent, "region": region, "mic": "mic1", "language": "en"}
    return v, exp


def make_cremad(root: Path) -> tuple[Path, Expected]:
    c = root / "CREMA-D"
    (c / "AudioWAV").mkdir(parents=True)
    (c / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n",
        encoding="utf-8")
    clips = [("1001_DFA_ANG_XX", "Don't forget a jacket", "angry", "unspecified", 0.7),
             ("1002_IEO_HAP_HI", "It's eleven o'clock", "happy", "high", 0.5),
             ("1001_TSI_NEU_XX", "The surface is slick", "neutral", "unspecified", 0.3)]
    exp: Expected = {"all": {}}
    for n, (name, text, emo, level, secs) in enumerate(clips):
        dur = tone(c / "AudioWAV" / f"{name}.wav", secs, freq=220 + 110 * n)
        actor = name[:4]
        exp["all"][name] = {"duration": dur, "text": text, "emotion": emo, "emotion_intensity": level,
                            "speaker": f"cremad-{actor}", "gender": "male" if actor == "1001" else "female",
                            "age": 51 if actor == "1001" else 21, "race": "Caucasian", "ethnicity": "Not Hispanic",
                            "language": "en"}
    return c, exp


def make_ravdess(root: Path) -> tuple[Path, Expected]:
    r = root / "Audio_Speech_Actors_01-24"
    clips = [("Actor_01", "03-01-05-02-01-02-01", "Kids are talking by the door", "angry", "strong", "speech", 2, "01", "male", 0.8),
             ("Actor_02", "03-01-01-01-02-01-02", "Dogs are sitting by the door", "neutral", "normal", "speech", 1, "02", "female", 0.6),
             ("Actor_02", "03-02-03-01-01-01-02", "Kids are talking by the door", "happy", "normal", "song", 1, "02", "female", 0.4)]
    exp: Expected = {"all": {}}
    for n, (actor, name, text, emo, inten, chan, rep, a, g, secs) in enumerate(clips):
        dur = tone(r / actor / f"{name}.wav", secs, sr=48000, freq=330 + 70 * n)
        exp["all"][name] = {"duration": dur, "text": text, "emotion": emo, "emotion_intensity": inten,
                            "vocal_channel": chan, "repetition": rep, "speaker": f"ravdess-{a}", "gender": g,
                            "language": "en"}
    return r, exp


def make_esc50(root: Path) -> tuple[Path, Expected]:
    e = root / "ESC-50-master"
    rows = [("1-100032-A-0.wav", 1, 0, "dog", "True", 0.9), ("2-100648-A-43.wav", 2, 43, "car_horn", "False", 0.5),
            ("5-103415-A-19.wav", 5, 19, "thunderstorm", "False", 0.3)]
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    exp: Expected = {"all": {}}
    for n, (name, fold, target, cat, esc10, secs) in enumerate(rows):
        dur = tone(e / "audio" / name, secs, sr=44100, freq=500 + 100 * n)
        lines.append(f"{name},{fold},{target},{cat},{esc10},{name.split('-')[1]},A")
        exp["all"][Path(name).stem] = {"duration": dur, "text": "", "event": cat, "fold": fold,
                                       "esc50_target": target, "esc10": esc10 == "True"}
    (e / "meta").mkdir(parents=True)
    (e / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return e, exp


def make_vocalsound(root: Path) -> tuple[Path, Expected]:
    v = root / "vocalsound_16k"
    clips = [("f0003_0_cough", "cough", "female", "vocalsound-f0003", 0.6), ("m0104_1_laughter", "laughter", "male", "vocalsound-m0104", 0.9),
             ("f0003_2_throatclearing", "throatclearing", "female", "vocalsound-f0003", 0.4)]
    exp: Expected = {"all": {}}
    for n, (name, event, g, spk, secs) in enumerate(clips):
        dur = tone(v / "audio_16k" / f"{name}.wav", secs, freq=180 + 60 * n)
        exp["all"][name] = {"duration": dur, "text": "", "event": event, "gender": g, "speaker": spk}
    return v, exp


def make_fsdd(root: Path) -> tuple[Path, Expected]:
    f = root / "free-spoken-digit-dataset"
    (f / "recordings").mkdir(parents=True)
    (f / "metadata.py").write_text(
        "metadata = {\n    'jackson': {'gender': 'male', 'accent': 'USA/neutral', 'language': 'english'},\n"
        "    'theo': {'gender': 'male', 'accent': 'USA/neutral', 'language': 'english'},\n}\n", encoding="utf-8")
    exp: Expected = {"all": {}}
    for n, (name, digit, word, spk, secs) in enumerate([("0_jackson_0", 0, "zero", "jackson", 0.4),
                                                         ("7_theo_12", 7, "seven", "theo", 0.3),
                                                         ("3_jackson_1", 3, "three", "jackson", 0.5)]):
        dur = tone(f / "recordings" / f"{name}.wav", secs, sr=8000, freq=400 + 50 * n)
        exp["all"][name] = {"duration": dur, "text": word, "digit": digit, "speaker": f"fsdd-{spk}",
                            "gender": "male", "accent": "USA/neutral", "language": "en"}
    return f, exp


def make_kaldi(root: Path) -> tuple[Path, Expected]:
    s5 = root / "egs" / "mini" / "s5"
    train, test = s5 / "data" / "train", s5 / "data" / "test"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    long = tone(s5 / "wavs" / "rec1.wav", 1.0, freq=300)
    short = tone(root / "elsewhere" / "rec2.flac", 0.6, freq=450)
    (train / "wav.scp").write_text("rec1 wavs/rec1.wav\n", encoding="utf-8")  # relative to s5, Kaldi-style
    (train / "segments").write_text("spkA-rec1-000 rec1 0.00 0.45\nspkB-rec1-001 rec1 0.50 -1\n", encoding="utf-8")
    (train / "text").write_text("spkA-rec1-000 HELLO THERE\nspkB-rec1-001\n", encoding="utf-8")
    (train / "utt2spk").write_text("spkA-rec1-000 spkA\nspkB-rec1-001 spkB\n", encoding="utf-8")
    (train / "spk2gender").write_text("spkA f\nspkB m\n", encoding="utf-8")
    (test / "wav.scp").write_text(f"spkA-rec2 {(root / 'elsewhere' / 'rec2.flac').resolve()}\n", encoding="utf-8")
    (test / "text").write_text("spkA-rec2 GOOD MORNING\n", encoding="utf-8")
    (test / "utt2spk").write_text("spkA-rec2 spkA\n", encoding="utf-8")
    (test / "utt2lang").write_text("spkA-rec2 en\n", encoding="utf-8")
    exp: Expected = {
        "train": {"spkA-rec1-000": {"duration": 0.45, "start": 0.0, "text": "HELLO THERE", "speaker": "spkA", "gender": "female"},
                  "spkB-rec1-001": {"duration": long - 0.5, "start": 0.5, "text": "", "speaker": "spkB", "gender": "male"}},
        "test": {"spkA-rec2": {"duration": short, "text": "GOOD MORNING", "speaker": "spkA", "language": "en"}},
    }
    return s5 / "data", exp


def make_folder(root: Path) -> tuple[Path, Expected]:
    f = root / "my_corpus"
    rows = [("clips/a.wav", "turn left", "S1", "F", "happy", "train", 0.5),
            ("clips/b.wav", "turn right", "S2", "m", "", "train", 0.7),
            ("clips/sub/c.wav", "", "S1", "F", "sad", "test", 0.3)]
    lines = ["file_name,text,speaker_id,sex,emotion,split"]
    exp: Expected = {"train": {}, "test": {}}
    for n, (rel, text, spk, sex, emo, split, secs) in enumerate(rows):
        dur = tone(f / rel, secs, freq=260 + 80 * n)
        lines.append(f"{rel},{text},{spk},{sex},{emo},{split}")
        e: dict[str, Any] = {"duration": dur, "text": text, "speaker": spk, "gender": "female" if sex == "F" else "male"}
        if emo:
            e["emotion"] = emo
        exp[split][Path(rel).with_suffix("").as_posix()] = e
    (f / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f, exp


def _hf_dataset_dict(root: Path) -> tuple[Any, Expected]:
    import datasets

    feats = datasets.Features({"id": datasets.Value("string"), "audio": datasets.Audio(sampling_rate=16000),
                               "sentence": datasets.Value("string"), "speaker_id": datasets.Value("int64"),
                               "emotion": datasets.ClassLabel(names=["neutral", "happy", "sad"])})
    ext = tone(root / "external" / "ext.wav", 0.4, sr=16000, freq=700)  # referenced by path, not embedded
    clips = {"train": [("utt-a", 0.6, 22050, 1, "good morning", 7, 1), ("utt-b", 0.35, 8000, 2, "hello", 8, 0)],
             "test": [("utt-c", 0.5, 48000, 1, "bye now", 7, 2)]}
    parts, exp = {}, {}
    for split, rows in clips.items():
        cols: dict[str, list] = {k: [] for k in feats}
        exp[split] = {}
        for n, (uid, secs, sr, ch, text, spk, emo) in enumerate(rows):
            b, dur = tone_bytes(secs, sr, 300 + 150 * n, channels=ch)
            for k, v in zip(feats, (uid, {"bytes": b, "path": f"{uid}.wav"}, text, spk, emo)):
                cols[k].append(v)
            exp[split][uid] = {"duration": dur, "text": text, "speaker": str(spk), "emotion": feats["emotion"].names[emo]}
        if split == "test":
            for k, v in zip(feats, ("utt-d", {"bytes": None, "path": str(root / "external" / "ext.wav")}, "external file", 9, 0)):
                cols[k].append(v)
            exp[split]["utt-d"] = {"duration": ext, "text": "external file", "speaker": "9", "emotion": "neutral"}
        # Build without datasets' audio encoder (which needs torchcodec), then cast to the Audio feature.
        parts[split] = datasets.Dataset.from_dict(cols).cast(feats)
    return datasets.DatasetDict(parts), exp


def make_hf_disk(root: Path) -> tuple[Path, Expected]:
    dd, exp = _hf_dataset_dict(root)
    dd.save_to_disk(str(root / "hf_saved"))
    return root / "hf_saved", exp


def make_hf_parquet(root: Path) -> tuple[Path, Expected]:
    dd, exp = _hf_dataset_dict(root)
    for split, ds in dd.items():
        ds.to_parquet(str(root / "hf_parquet" / "data" / f"{split}-00000-of-00001.parquet"))
    return root / "hf_parquet", exp


def make_lhotse(root: Path) -> tuple[Path, Expected]:
    """A recording+supervision pair (split ``dev``) and a cut set with a two-supervision cut (``train``)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.cut import MonoCut

    d = root / "lhotse_manifests"
    d.mkdir(parents=True)
    tone(root / "audio" / "r1.wav", 1.0, freq=320)
    tone(root / "audio" / "r2.flac", 0.8, freq=520)
    r1 = Recording.from_file(root / "audio" / "r1.wav")
    r2 = Recording.from_file(root / "audio" / "r2.flac")
    RecordingSet.from_recordings([r1, r2]).to_file(d / "mini_recordings_dev.jsonl.gz")
    SupervisionSet.from_segments([
        SupervisionSegment("r1-s0", "r1", start=0.1, duration=0.4, text="first part", speaker="alice", gender="female",
                           language="en", custom={"emotion": "happy"}),
        SupervisionSegment("r1-s1", "r1", start=0.55, duration=0.4, text="second part", speaker="bob", language="en"),
    ]).to_file(d / "mini_supervisions_dev.jsonl.gz")
    c1 = MonoCut("c1", start=0.0, duration=0.8, channel=0, recording=r2, custom={"corpus": "mini"},
                 supervisions=[SupervisionSegment("c1-sup", "r2", start=0.0, duration=0.8, text="whole", speaker="carol")])
    c2 = MonoCut("c2", start=0.2, duration=0.8, channel=0, recording=r1, supervisions=[
        SupervisionSegment("c2-a", "r1", start=0.0, duration=0.3, text="left", speaker="dan"),
        SupervisionSegment("c2-b", "r1", start=0.4, duration=0.6, text="right", speaker="erin")])  # clipped at 0.8
    CutSet.from_cuts([c1, c2]).to_file(d / "mini_cuts_train.jsonl.gz")
    exp: Expected = {
        "dev": {"r1-s0": {"start": 0.1, "duration": 0.4, "text": "first part", "speaker": "alice", "gender": "female",
                          "language": "en", "emotion": "happy"},
                "r1-s1": {"start": 0.55, "duration": 0.4, "text": "second part", "speaker": "bob"},
                "r2": {"start": 0.0, "duration": 0.8, "text": ""}},
        "train": {"c1": {"start": 0.0, "duration": 0.8, "text": "whole", "speaker": "carol", "corpus": "mini"},
                  "c2-a": {"start": 0.2, "duration": 0.3, "text": "left", "speaker": "dan"},
                  "c2-b": {"start": 0.6, "duration": 0.4, "text": "right", "speaker": "erin"}},
    }
    return d, exp


FIXTURES: dict[str, Callable[[Path], tuple[Path, Expected]]] = {
    "librispeech": make_librispeech,
    "commonvoice": make_commonvoice,
    "vctk": make_vctk,
    "cremad": make_cremad,
    "ravdess": make_ravdess,
    "esc50": make_esc50,
    "vocalsound": make_vocalsound,
    "fsdd": make_fsdd,
    "kaldi": make_kaldi,
    "folder": make_folder,
    "hf": make_hf_disk,
    "lhotse": make_lhotse,
}
"""Recipe name -> fixture maker (``hf``: the save_to_disk layout; :func:`make_hf_parquet` for parquet)."""


# ---------------------------------------------------------------------------------------- bad lines


def _append(path: Path, line: str) -> tuple[Path, int]:
    text = path.read_text(encoding="utf-8")
    path.write_text(text + line + "\n", encoding="utf-8")
    return path, len(text.splitlines()) + 1


def _rename(path: Path, new_name: str) -> tuple[Path, None]:
    target = path.with_name(new_name)
    path.rename(target)
    return target, None


BAD_LINES: dict[str, Callable[[Path], tuple[Path, int | None]]] = {
    "librispeech": lambda s: _append(s / "train-clean-100" / "19" / "198" / "19-198.trans.txt", "19-198-0002"),
    "commonvoice": lambda s: _append(s / "en" / "train.tsv", "cc33\tcommon_voice_en_9.mp3\tonly three fields"),
    "vctk": lambda s: _append(s / "speaker-info.txt", "p999  23"),
    "cremad": lambda s: _append(s / "VideoDemographics.csv", "1003,unknown,Male,Asian,Not Hispanic"),
    "ravdess": lambda s: _rename(s / "Actor_01" / "03-01-05-02-01-02-01.wav", "03-01-09-02-01-02-01.wav"),
    "esc50": lambda s: _append(s / "meta" / "esc50.csv", "1-1-A-1.wav,one,1,rooster,False,1,A"),
    "vocalsound": lambda s: _rename(s / "audio_16k" / "f0003_0_cough.wav", "cough-f0003.wav"),
    "fsdd": lambda s: _rename(s / "recordings" / "0_jackson_0.wav", "zero_jackson.wav"),
    "kaldi": lambda s: _append(s / "train" / "segments", "spkA-rec1-002 rec1 0.9"),
    "folder": lambda s: _append(s / "metadata.csv", "clips/a.wav,too,few"),
    "lhotse": lambda s: _append_gz(s / "mini_supervisions_dev.jsonl.gz", '{"id": "broken", "recording_id": '),
}
"""Recipe -> corruption of its fixture; returns the file (and line) the error must name."""


def _append_gz(path: Path, line: str) -> tuple[Path, int]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines + [line]) + "\n")
    return path, len(lines) + 1


def manifest_lines(path: Path) -> list[dict]:
    """The JSON objects of a manifest, in order."""
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]

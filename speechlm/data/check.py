"""``speechlm prepare --check MANIFEST``: a data report before training, with every problem located.

:func:`check_manifest` reads a manifest the way training will, opens every audio file it names (in
parallel, one task per file so recordings shared by many cuts are decoded once) and reports:

* counts, total hours, duration statistics and a duration histogram (``duration_hist.png``);
* label distributions: transcript presence, speakers, and every other label key (``gender``,
  ``emotion``, ``event``, ``language``, ...): a value -> count table when the key has at most
  ``max_label_values`` distinct values, only the number of distinct values otherwise;
* the sample-rate and channel mix of the files;
* **errors** (training would stop on them, or they are plainly broken): malformed or invalid lines,
  duplicated ids (every line that carries the id), missing files, unreadable or corrupt files, cuts
  that start or end past the end of their file, zero-length cuts, cuts longer than ``max_duration``;
* **warnings** (the data loads, but look at it): silent cuts (peak or RMS below ``silence_dbfs``),
  files at another sample rate than the model's (resampled on every load) or with several channels
  (averaged), explicitly empty transcripts.

Every problem is a ``(source, reason)`` pair whose source is ``manifest:line``, so nothing is dropped
silently and each one is an editor's go-to-line away. Parse errors do not stop the check: the bad
line is reported and the next one is read.

``CheckReport.to_dict()`` / ``to_markdown()`` are written as ``check.json`` / ``check.md`` (plus the
histogram PNG) when an output folder is given; :func:`run_check` prints a summary and returns the
exit code (1 when there are errors).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechlm.data.manifest import ManifestError, _parse_line
from speechlm.utils import atomic_open, write_json

__all__ = ["CheckReport", "check_manifest", "run_check"]

# Same tolerance as manifest.validate: rounded durations and codec padding may overshoot a little.
_END_TOLERANCE = 0.05
# Floor for dBFS so digital silence is a number (-200 dBFS), not -inf (invalid JSON).
_DB_FLOOR = 1e-10
# Decode long segments in blocks so an hour-long recording does not need a GB of memory.
_BLOCK_FRAMES = 30 * 16000
# Problems listed per kind in check.md and on the console (check.json holds them all).
_SHOW_PER_KIND = 10


def _dbfs(x: float) -> float:
    return round(20.0 * math.log10(max(x, _DB_FLOOR)), 2)


def _kind(reason: str) -> str:
    """The kind of a problem: the reason's text before the first ':' (reasons are built that way)."""
    return reason.split(":", 1)[0]


@dataclass
class CheckReport:
    """What :func:`check_manifest` found. Problems are ``(source, reason)`` with source ``manifest:line``."""

    manifest: str
    """The manifest checked."""
    lines: int = 0
    """Non-blank lines."""
    cuts: int = 0
    """Lines that parsed into a cut (duplicates included)."""
    cuts_ok: int = 0
    """Cuts without any error (warnings allowed): what training would use."""
    hours: float = 0.0
    """Total duration of the parsed cuts whose duration is known, hours."""
    hours_ok: float = 0.0
    """Total duration of the error-free cuts, hours."""
    files: dict[str, int] = field(default_factory=dict)
    """Distinct audio files: ``{"total", "readable", "missing", "corrupt"}``."""
    durations: dict[str, float] = field(default_factory=dict)
    """Cut duration statistics in seconds: min, mean, median, p95, max."""
    duration_histogram: dict[str, list] = field(default_factory=dict)
    """``{"edges": [...], "counts": [...]}`` (seconds), what the PNG shows."""
    text: dict[str, int] = field(default_factory=dict)
    """Transcripts: ``{"present": n, "empty": n, "missing": n}`` (non-blank / blank / no key)."""
    speakers: int | None = None
    """Distinct ``speaker`` labels (None when no cut has one)."""
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per label key: ``{"cuts": n_with_key, "distinct": n, "counts": {value: n}}``; ``counts`` only when
    ``distinct <= max_label_values``. List values (``tasks: [...]``) count each element."""
    sample_rates: dict[str, int] = field(default_factory=dict)
    """Readable files per sample rate (Hz, as a string key)."""
    channels: dict[str, int] = field(default_factory=dict)
    """Readable files per channel count."""
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    """Duplicated id -> every ``manifest:line`` that carries it."""
    silent: int = 0
    """Cuts whose peak or RMS level is below the silence threshold."""
    errors: list[tuple[str, str]] = field(default_factory=list)
    """``(source, reason)`` for each problem that makes a cut unusable (or a line unreadable)."""
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """``(source, reason)`` for each cut that loads but deserves a look."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The thresholds the check ran with."""
    histogram_png: str | None = None
    """Path of the written duration histogram, if any."""
    seconds: float = 0.0
    """Wall time of the check."""

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors

    def error_counts(self) -> dict[str, int]:
        """Errors per kind, most common first."""
        return dict(Counter(_kind(r) for _, r in self.errors).most_common())

    def warning_counts(self) -> dict[str, int]:
        """Warnings per kind, most common first."""
        return dict(Counter(_kind(r) for _, r in self.warnings).most_common())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``check.json`` holds); problems as ``{"source", "reason"}`` objects."""
        return {
            "manifest": self.manifest, "ok": self.ok,
            "lines": self.lines, "cuts": self.cuts, "cuts_ok": self.cuts_ok,
            "hours": round(self.hours, 9), "hours_ok": round(self.hours_ok, 9),
            "files": self.files, "durations": self.durations, "duration_histogram": self.duration_histogram,
            "text": self.text, "speakers": self.speakers, "labels": self.labels,
            "sample_rates": self.sample_rates, "channels": self.channels,
            "duplicates": self.duplicates, "silent": self.silent,
            "error_counts": self.error_counts(), "warning_counts": self.warning_counts(),
            "errors": [{"source": s, "reason": r} for s, r in self.errors],
            "warnings": [{"source": s, "reason": r} for s, r in self.warnings],
            "settings": self.settings, "histogram_png": self.histogram_png, "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """One line for logs."""
        s = (f"{self.cuts_ok}/{self.cuts} cuts ok ({self.hours_ok:.2f} of {self.hours:.2f} h), "
             f"{len(self.errors)} errors, {len(self.warnings)} warnings")
        if self.errors:
            s += ": " + ", ".join(f"{k} x{v}" for k, v in list(self.error_counts().items())[:4])
        return s

    def to_markdown(self) -> str:
        """A readable report (what ``check.md`` holds)."""
        from speechlm.utils import markdown_table

        p = [f"# Data check: `{self.manifest}`", "",
             f"**{'OK' if self.ok else 'ERRORS'}**: {self.summary()}.", ""]
        d = self.durations
        rows = [["lines", self.lines], ["cuts", self.cuts], ["cuts without errors", self.cuts_ok],
                ["hours", f"{self.hours:.3f}"], ["hours without errors", f"{self.hours_ok:.3f}"],
                ["audio files", self.files.get("total", 0)], ["files missing", self.files.get("missing", 0)],
                ["files corrupt", self.files.get("corrupt", 0)], ["silent cuts", self.silent],
                ["duplicated ids", len(self.duplicates)]]
        if d:
            rows.append(["duration min / median / mean / p95 / max (s)",
                         " / ".join(f"{d[k]:.2f}" for k in ("min", "median", "mean", "p95", "max"))])
        p += ["## Overview", "", markdown_table(["", "value"], rows), ""]
        if self.histogram_png:
            p += [f"![duration histogram]({Path(self.histogram_png).name})", ""]
        mix = [["sample rate", f"{k} Hz", v] for k, v in self.sample_rates.items()]
        mix += [["channels", k, v] for k, v in self.channels.items()]
        if mix:
            p += ["## Files", "", markdown_table(["property", "value", "files"], mix), ""]
        p += ["## Labels", ""]
        t = self.text
        p.append(f"Transcripts: {t.get('present', 0)} present, {t.get('empty', 0)} empty, {t.get('missing', 0)} without a text field. "
                 f"Speakers: {self.speakers if self.speakers is not None else 'no speaker labels'}.")
        p.append("")
        for key, info in self.labels.items():
            if "counts" in info:
                cells = ", ".join(f"{v} ({n})" for v, n in info["counts"].items())
                p.append(f"* `{key}` ({info['cuts']} cuts, {info['distinct']} values): {cells}")
            else:
                p.append(f"* `{key}` ({info['cuts']} cuts): {info['distinct']} distinct values")
        p.append("")
        for title, problems, counts in (("Errors", self.errors, self.error_counts()),
                                        ("Warnings", self.warnings, self.warning_counts())):
            if not problems:
                continue
            p += [f"## {title} ({len(problems)})", ""]
            for kind, n in counts.items():
                shown = [(s, r) for s, r in problems if _kind(r) == kind][:_SHOW_PER_KIND]
                p.append(f"### {kind} ({n})")
                p.append("")
                p += [f"* `{s}`: {r}" for s, r in shown]
                if n > len(shown):
                    p.append(f"* ... and {n - len(shown)} more (all in check.json)")
                p.append("")
        p.append(f"Settings: {json.dumps(self.settings)}. Checked in {self.seconds:.1f} s.")
        return "\n".join(p) + "\n"


# ------------------------------------------------------------------------------------------------
# per-file work (runs in worker threads: libsndfile and numpy release the GIL on the heavy parts)
# ------------------------------------------------------------------------------------------------
def _scan_file(path: str, segments: list[tuple[float, float | None]]) -> dict[str, Any]:
    """Open one audio file; for each (start, duration) segment measure peak and RMS level.

    Returns ``{"error": kind, "detail": msg}`` for a missing/unreadable file, else
    ``{"sr", "frames", "channels", "levels": [(peak, rms, n_frames) or error string per segment]}``.
    """
    import soundfile as sf

    if not os.path.isfile(path):
        return {"error": "missing audio file", "detail": "file not found"}
    try:
        f = sf.SoundFile(path)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types for bad files
        return {"error": "corrupt audio file", "detail": f"cannot read header: {e}"}
    with f:
        sr, frames, channels = int(f.samplerate), int(f.frames), int(f.channels)
        if sr <= 0 or channels <= 0:
            return {"error": "corrupt audio file", "detail": f"invalid header (rate {sr}, channels {channels})"}
        levels: list[Any] = []
        for start, duration in segments:
            first = int(round(start * sr))
            n = frames - first if duration is None else min(int(round(duration * sr)), frames - first)
            if n <= 0:
                levels.append((0.0, 0.0, 0))
                continue
            peak, sumsq, done = 0.0, 0.0, 0
            try:
                f.seek(first)
                while done < n:
                    x = f.read(min(_BLOCK_FRAMES, n - done), dtype="float32", always_2d=True)
                    if x.shape[0] == 0:
                        break  # the header promised more frames than the data holds
                    peak = max(peak, float(np.abs(x).max()))
                    sumsq += float(np.square(x, dtype=np.float64).sum())
                    done += x.shape[0]
            except Exception as e:  # noqa: BLE001
                levels.append(f"cannot decode audio data (corrupt or truncated file?): {e}")
                continue
            if done < n:
                levels.append(f"audio data ends after {(first + done) / sr:.3f} s but the header says "
                              f"{frames / sr:.3f} s (truncated file?)")
                continue
            levels.append((peak, math.sqrt(sumsq / max(1, done * channels)), done))
    return {"sr": sr, "frames": frames, "channels": channels, "levels": levels}


# ------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------
def _label_values(value: Any) -> list[str]:
    """Hashable display values of one label: list elements counted separately, objects as JSON."""
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
        return [str(v) for v in value]
    if isinstance(value, (dict, list)):
        return [json.dumps(value, sort_keys=True, ensure_ascii=False)]
    return [str(value)]


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _histogram(durations: list[float], bins: int = 40) -> dict[str, list]:
    if not durations:
        return {"edges": [], "counts": []}
    lo, hi = min(durations), max(durations)
    if hi - lo < 1e-6:
        lo, hi = max(0.0, lo - 0.5), hi + 0.5
    counts, edges = np.histogram(durations, bins=min(bins, max(1, len(durations))), range=(lo, hi))
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def plot_duration_histogram(report: CheckReport, png_path: str | os.PathLike, max_duration: float | None = None) -> Path:
    """Draw the report's duration histogram into a PNG (matplotlib Agg, written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    png = Path(png_path)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(f"Cut durations: {Path(report.manifest).name} ({report.cuts} cuts, {report.hours:.2f} h)")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("cuts")
    h = report.duration_histogram
    if h.get("counts"):
        edges = h["edges"]
        ax.hist(edges[:-1], bins=edges, weights=h["counts"], color="tab:blue", alpha=0.8, edgecolor="white")
        d = report.durations
        ax.axvline(d["median"], color="tab:orange", linestyle="--", linewidth=1.2, label=f"median {d['median']:.2f} s")
        if max_duration is not None and d["max"] > 0.8 * max_duration:
            ax.axvline(max_duration, color="tab:red", linewidth=1.2, label=f"max_duration {max_duration:g} s")
        ax.legend(loc="upper right")
        ax.grid(True, alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no cut with a known duration", ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_open(png, "wb") as f:
        fig.savefig(f, format="png")
    return png


def check_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    sample_rate: int = 16000,
    silence_dbfs: float = -60.0,
    workers: int = 2,
    max_duration: float | None = 30.0,
    max_label_values: int = 50,
    progress: bool = True,
) -> CheckReport:
    """Check every line and audio file of ``manifest``; write check.json, check.md, duration_hist.png to ``out_dir``.

    Args:
        manifest: a JSONL manifest (toolkit ``audio`` layout or the real-data ``path`` layout).
        out_dir: folder for the report files (created); None writes nothing.
        sample_rate: the model's rate; files at other rates are warnings (resampled on every load).
        silence_dbfs: a cut whose peak or RMS level is below this (dBFS) is reported as silent.
        workers: threads reading audio files (0 or 1: in this thread).
        max_duration: cuts longer than this (s) are errors, as in training (Whisper sees <= 30 s); None: no limit.
        max_label_values: label keys with at most this many distinct values get a value -> count table.
        progress: show a tqdm bar over the files.

    Raises:
        FileNotFoundError: the manifest itself does not exist. Everything else is reported, not raised.
    """
    t0 = time.perf_counter()
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    base = path.resolve().parent
    name = str(path)
    rep = CheckReport(manifest=name, settings={
        "sample_rate": sample_rate, "silence_dbfs": silence_dbfs, "max_duration": max_duration,
        "max_label_values": max_label_values, "end_tolerance_s": _END_TOLERANCE})
    errors: dict[str, list[str]] = {}  # source -> error reasons (a cut may have several)
    warnings: list[tuple[str, str]] = []
    line_errors: list[tuple[str, str]] = []

    # ---- 1. parse every line, never stopping at a bad one ----------------------------------------
    cuts = []  # (Cut, raw dict)
    first_seen: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rep.lines += 1
            source = f"{name}:{lineno}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError("", [(source, f"malformed JSON: {e.msg} (column {e.colno})")]) from None
                # duration=None lines make _parse_line read the header here; the scan below reports unreadable ones
                cut = _parse_line(obj, source, base)
            except ManifestError as e:
                for s, r in (e.problems or [(source, str(e))]):
                    # "field 'x': reason" -> kind "invalid field 'x'"; JSON/object problems keep their text
                    line_errors.append((s, f"invalid {r}" if r.startswith("field '") else
                                        r if r.startswith("malformed JSON") else f"invalid line: {r}"))
                continue
            cuts.append((cut, obj))
            first_seen.setdefault(cut.id, []).append(source)
    rep.cuts = len(cuts)
    rep.duplicates = {cid: srcs for cid, srcs in first_seen.items() if len(srcs) > 1}
    for cid, srcs in rep.duplicates.items():
        for s in srcs[1:]:
            errors.setdefault(s, []).append(f"duplicate id: {cid!r} is also on " + ", ".join(x for x in srcs if x != s))

    # ---- 2. labels --------------------------------------------------------------------------------
    rep.text = {"present": 0, "empty": 0, "missing": 0}
    values: dict[str, Counter] = {}
    with_key: Counter = Counter()
    for cut, obj in cuts:
        if "text" not in obj or obj.get("text") is None:
            rep.text["missing"] += 1
        elif not cut.text.strip():
            rep.text["empty"] += 1
            warnings.append((cut.source, f"empty transcript: the text field is blank (audio {cut.audio})"))
        else:
            rep.text["present"] += 1
        for k, v in cut.labels.items():
            with_key[k] += 1
            values.setdefault(k, Counter()).update(_label_values(v))
    for k in sorted(values, key=lambda k: (k not in ("language", "speaker", "gender", "emotion", "event"), k)):
        c = values[k]
        info: dict[str, Any] = {"cuts": with_key[k], "distinct": len(c)}
        if len(c) <= max_label_values:
            info["counts"] = dict(c.most_common())
        rep.labels[k] = info
    rep.speakers = len(values["speaker"]) if "speaker" in values else None

    # ---- 3. audio files, in parallel ---------------------------------------------------------------
    by_file: dict[str, list[int]] = {}
    for i, (cut, _) in enumerate(cuts):
        by_file.setdefault(cut.audio, []).append(i)
    results: dict[str, dict[str, Any]] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(by_file), desc="check audio", unit="file", disable=not progress, dynamic_ncols=True)
    jobs = {f: [(cuts[i][0].start, cuts[i][0].duration) for i in idx] for f, idx in by_file.items()}
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_scan_file, f, segs): f for f, segs in jobs.items()}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    else:
        for f, segs in jobs.items():
            results[f] = _scan_file(f, segs)
            bar.update(1)
    bar.close()

    rep.files = {"total": len(by_file), "readable": 0, "missing": 0, "corrupt": 0}
    rates: Counter = Counter()
    chans: Counter = Counter()
    durations: list[float] = []
    for f, idx in by_file.items():
        res = results[f]
        if "error" in res:
            rep.files["missing" if res["error"].startswith("missing") else "corrupt"] += 1
            for i in idx:
                errors.setdefault(cuts[i][0].source, []).append(f"{res['error']}: {f} ({res['detail']})")
            continue
        rep.files["readable"] += 1
        sr, frames, ch = res["sr"], res["frames"], res["channels"]
        rates[str(sr)] += 1
        chans[str(ch)] += 1
        file_len = frames / sr
        for i, lev in zip(idx, res["levels"]):
            cut = cuts[i][0]
            src = cut.source
            if frames == 0:
                errors.setdefault(src, []).append(f"empty audio file: {f} holds no samples")
                continue
            if isinstance(lev, str):
                errors.setdefault(src, []).append(f"corrupt audio file: {f} ({lev})")
                continue
            if cut.start >= file_len:
                errors.setdefault(src, []).append(
                    f"cut past end of file: start {cut.start:.3f} s is past the end of {f} ({file_len:.3f} s)")
                continue
            if cut.duration is not None and cut.start + cut.duration > file_len + _END_TOLERANCE:
                errors.setdefault(src, []).append(
                    f"cut past end of file: the cut ends at {cut.start + cut.duration:.3f} s but {f} is {file_len:.3f} s long")
            if sr != sample_rate:
                warnings.append((src, f"sample rate: {sr} Hz, not {sample_rate} Hz (resampled on every load): {f}"))
            if ch > 1:
                warnings.append((src, f"multi-channel: {ch} channels (averaged to mono on load): {f}"))
            peak, rms, n = lev
            if n > 0:
                peak_db, rms_db = _dbfs(peak), _dbfs(rms)
                if peak_db < silence_dbfs or rms_db < silence_dbfs:
                    rep.silent += 1
                    warnings.append((src, f"silent: peak {peak_db:.1f} dBFS, RMS {rms_db:.1f} dBFS "
                                          f"(threshold {silence_dbfs:g} dBFS): {f}"))
    for cut, _ in cuts:
        if cut.duration is None:
            continue  # no duration and an unreadable header: reported above as a missing/corrupt file
        durations.append(cut.duration)
        if cut.duration <= 0:
            errors.setdefault(cut.source, []).append(f"zero-length cut: duration {cut.duration:g} s (audio {cut.audio})")
        elif max_duration is not None and cut.duration > max_duration:
            errors.setdefault(cut.source, []).append(
                f"too long: {cut.duration:.2f} s exceeds max_duration {max_duration:g} s (audio {cut.audio})")
    rep.sample_rates = dict(rates.most_common())
    rep.channels = dict(chans.most_common())

    # ---- 4. totals, in line order ------------------------------------------------------------------
    rep.hours = sum(durations) / 3600.0
    bad_sources = {s for s, rs in errors.items() if rs}
    ok_cuts = [c for c, _ in cuts if c.source not in bad_sources]
    rep.cuts_ok = len(ok_cuts)
    rep.hours_ok = sum(c.duration or 0.0 for c in ok_cuts) / 3600.0
    if durations:
        ds = sorted(durations)
        rep.durations = {"min": round(ds[0], 4), "mean": round(statistics.fmean(ds), 4),
                         "median": round(statistics.median(ds), 4),
                         "p95": round(ds[min(len(ds) - 1, int(math.ceil(0.95 * len(ds))) - 1)], 4),
                         "max": round(ds[-1], 4)}
    rep.duration_histogram = _histogram(durations)

    def line_of(source: str) -> int:
        tail = source.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    all_errors = line_errors + [(s, r) for s, rs in errors.items() for r in rs]
    rep.errors = sorted(all_errors, key=lambda p: line_of(p[0]))
    rep.warnings = sorted(warnings, key=lambda p: line_of(p[0]))
    rep.seconds = time.perf_counter() - t0

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rep.histogram_png = str(plot_duration_histogram(rep, out / "duration_hist.png", max_duration))
        write_json(out / "check.json", rep.to_dict())
        with atomic_open(out / "check.md", "w", encoding="utf-8") as f:
            f.write(rep.to_markdown())
    return rep


def print_summary(rep: CheckReport, console=None, per_kind: int = _SHOW_PER_KIND) -> None:
    """A readable console summary (rich): overview, label tables, problems grouped by kind."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console(stderr=False, highlight=False)
    t = Table(title=f"Data check: {rep.manifest}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("cuts (ok / parsed / lines)", f"{rep.cuts_ok} / {rep.cuts} / {rep.lines}")
    t.add_row("hours (ok / all)", f"{rep.hours_ok:.3f} / {rep.hours:.3f}")
    if rep.durations:
        d = rep.durations
        t.add_row("duration min / median / max", f"{d['min']:.2f} / {d['median']:.2f} / {d['max']:.2f} s")
    f = rep.files
    t.add_row("files (readable / missing / corrupt)", f"{f.get('readable', 0)} / {f.get('missing', 0)} / {f.get('corrupt', 0)}")
    t.add_row("sample rates (files)", ", ".join(f"{k} Hz: {v}" for k, v in rep.sample_rates.items()) or "-")
    t.add_row("channels (files)", ", ".join(f"{k}: {v}" for k, v in rep.channels.items()) or "-")
    t.add_row("transcripts (present / empty / none)", f"{rep.text.get('present', 0)} / {rep.text.get('empty', 0)} / {rep.text.get('missing', 0)}")
    t.add_row("speakers", str(rep.speakers) if rep.speakers is not None else "-")
    t.add_row("silent cuts", str(rep.silent))
    t.add_row("duplicated ids", str(len(rep.duplicates)))
    con.print(t)
    lab = Table(title="Labels")
    lab.add_column("key")
    lab.add_column("cuts", justify="right")
    lab.add_column("distinct", justify="right")
    lab.add_column("values (count)")
    for k, info in rep.labels.items():
        counts = info.get("counts")
        shown = (", ".join(f"{_short(v)} ({n})" for v, n in list(counts.items())[:8]) + (" ..." if len(counts) > 8 else "")
                 if counts else "-")
        lab.add_row(k, str(info["cuts"]), str(info["distinct"]), shown)
    if rep.labels:
        con.print(lab)
    for title, problems, counts, style in (("errors", rep.errors, rep.error_counts(), "red"),
                                           ("warnings", rep.warnings, rep.warning_counts(), "yellow")):
        if not problems:
            continue
        con.print(f"[bold {style}]{len(problems)} {title}[/]")
        for kind, n in counts.items():
            con.print(f"  [{style}]{kind}[/] x{n}")
            shown = [(s, r) for s, r in problems if _kind(r) == kind][:per_kind]
            for s, r in shown:
                con.print(f"    {s}: {r}", markup=False, highlight=False, soft_wrap=True)
            if n > len(shown):
                con.print(f"    ... and {n - len(shown)} more")
    verdict = "[bold green]OK[/]" if rep.ok else "[bold red]FAILED[/]"
    con.print(f"{verdict} {rep.summary()} ({rep.seconds:.1f} s)", highlight=False)


def run_check(manifest: str, out: str = "", workers: int = 2, silence_dbfs: float = -60.0,
              max_duration: float = 30.0, strict: bool = False) -> int:
    """Check a manifest and its audio; print a summary; return 1 if there are errors, else 0.

    manifest: the JSONL manifest to check.
    out: folder for check.json, check.md and duration_hist.png ("" writes no files).
    workers: threads reading audio files.
    silence_dbfs: cuts whose peak or RMS level is below this are reported as silent.
    max_duration: longest allowed cut in seconds (0: no limit).
    strict: warnings (silent cuts, other sample rates, multi-channel files, empty transcripts) also fail.
    """
    rep = check_manifest(manifest, out_dir=out or None, workers=workers, silence_dbfs=silence_dbfs,
                         max_duration=max_duration or None)
    print_summary(rep)
    if out:
        print(f"wrote {Path(out) / 'check.json'}, check.md, duration_hist.png", flush=True)
    return 1 if rep.errors or (strict and rep.warnings) else 0

"""Evaluation outputs and training plots: results.jsonl, summary.json, report.md, loss-curve PNG.

Every file is written atomically (via :mod:`speechlm.utils`), so a crashed or interrupted run never
leaves a torn report that a later comparison would silently read.

Shapes used throughout:

* *row* (one per utterance and system): ``{"id", "system", "subset", "ref", "hyp", "wer", ...}``;
  extra keys are kept verbatim.
* *summary_by_system*: ``{system: {subset: {metric: value, ..., "n": n_utterances}}}``,
  e.g. ``{"speechlm (trained)": {"test-clean": {"wer": 0.12, "n": 200}}}``.
* *summary* (what goes to summary.json): any JSON-able dict; by convention
  ``{"task": {metric: value}, "by_system": summary_by_system, ...}``. :func:`write_eval_outputs`
  fills ``by_system`` from the rows when it is missing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from speechlm.metrics import HIGHER_IS_BETTER, METRICS, normalizer_name, utterance_wer
from speechlm.utils import atomic_open, write_json, write_jsonl

__all__ = [
    "ALL_SUBSET",
    "summarize_rows",
    "write_eval_outputs",
    "markdown_table",
    "comparison_table",
    "comparison_rich_table",
    "print_comparison",
    "read_loss_log",
    "plot_loss_curve",
]

log = logging.getLogger(__name__)

# A subset with this name is treated as the pooled total: its "n" is the utterance count shown.
ALL_SUBSET = "all"

# Metrics that are fractions in [0, 1] and are shown as percentages in tables.
PERCENT_METRICS = frozenset({"wer", "cer", "accuracy", "accuracy_f1", "macro_f1", "token_f1", "exact_match", "rouge_l", "keyword_f1", "micro_f1"})

# Row keys written first in results.jsonl so the file reads well with `head`/`jq`.
_ROW_KEY_ORDER = ("id", "system", "subset", "ref", "hyp", "wer")


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------


def summarize_rows(
    rows: Iterable[Mapping[str, Any]], metric: str = "wer", normalize: bool = True, add_all: bool = True
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Group rows by (system, subset) and compute ``METRICS[metric]`` on their ref/hyp pairs.

    Rows missing ``system``/``subset`` fall under ``"default"``. With ``add_all`` and more than one
    subset for a system, an ``"all"`` subset pools every utterance (corpus-level, not a mean of
    subset rates). Returns a *summary_by_system* mapping, systems and subsets in first-seen order.
    """
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    groups: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
    for r in rows:
        system = str(r.get("system", "default"))
        subset = str(r.get("subset", "default"))
        refs, hyps = groups.setdefault(system, {}).setdefault(subset, ([], []))
        refs.append(r.get("ref") or "")
        hyps.append(r.get("hyp") or "")
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    fn = METRICS[metric]
    for system, subsets in groups.items():
        out[system] = {name: fn(refs, hyps, normalize=normalize) for name, (refs, hyps) in subsets.items()}
        if add_all and len(subsets) > 1 and ALL_SUBSET not in subsets:
            all_refs = [x for refs, _ in subsets.values() for x in refs]
            all_hyps = [x for _, hyps in subsets.values() for x in hyps]
            out[system][ALL_SUBSET] = fn(all_refs, all_hyps, normalize=normalize)
    return out


def _order_row(row: Mapping[str, Any]) -> dict[str, Any]:
    first = {k: row[k] for k in _ROW_KEY_ORDER if k in row}
    return {**first, **{k: v for k, v in row.items() if k not in first}}


def write_eval_outputs(
    out_dir: str | os.PathLike,
    rows: list[dict],
    summary: dict | None = None,
    *,
    metric: str = "wer",
    title: str = "Evaluation report",
    n_examples: int = 10,
) -> dict[str, Path]:
    """Write ``results.jsonl``, ``summary.json`` and ``report.md`` under ``out_dir`` (atomically).

    Rows lacking a ``"wer"`` but holding ``ref``/``hyp`` strings get a per-utterance WER (normalized).
    ``summary`` is written as given, plus ``"by_system"`` computed from the rows with ``metric`` when
    absent, and ``"normalizer"`` naming the text normalizer. ``report.md`` shows the system x subset
    comparison table, other scalar summary entries, and the ``n_examples`` worst utterances.
    Returns ``{"results": path, "summary": path, "report": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    for r in rows:
        r = dict(r)
        if "wer" not in r and isinstance(r.get("ref"), str) and isinstance(r.get("hyp"), str):
            r["wer"] = utterance_wer(r["ref"], r["hyp"])
        done.append(_order_row(r))

    summary = dict(summary or {})
    if "by_system" not in summary and done and any("ref" in r and "hyp" in r for r in done):
        summary["by_system"] = summarize_rows((r for r in done if "ref" in r and "hyp" in r), metric=metric)
    summary.setdefault("normalizer", normalizer_name())

    paths = {"results": out / "results.jsonl", "summary": out / "summary.json", "report": out / "report.md"}
    write_jsonl(paths["results"], done)
    write_json(paths["summary"], _json_safe(summary))
    with atomic_open(paths["report"], "w", encoding="utf-8") as f:
        f.write(_render_report(title, summary, done, metric, n_examples))
    return paths


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not valid JSON (json.dump would write bare NaN); store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _json_safe(obj.item())
        except (TypeError, ValueError):
            pass
    return obj


def _render_report(title: str, summary: Mapping[str, Any], rows: list[dict], metric: str, n_examples: int) -> str:
    parts = [f"# {title}", ""]
    by_system = summary.get("by_system")
    if isinstance(by_system, Mapping) and by_system:
        metrics = _metrics_in(by_system)
        for m in [metric] + [x for x in metrics if x != metric and x in METRICS]:
            if m in metrics:
                parts += [f"## {_metric_label(m)} by system and subset", "", comparison_table(by_system, metric=m), ""]
    scalars = [
        (str(task), _metric_label(str(k)), _fmt_value(k, v))
        for task, vals in summary.items()
        if task != "by_system" and isinstance(vals, Mapping)
        for k, v in vals.items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    ]
    if scalars:
        parts += ["## Summary", "", markdown_table(["Task", "Metric", "Value"], scalars), ""]
    worst = sorted(
        (r for r in rows if isinstance(r.get("wer"), (int, float)) and r["wer"] > 0),
        key=lambda r: -float(r["wer"]),
    )[:n_examples]
    if worst:
        parts += [f"## Worst {len(worst)} utterances by WER", ""]
        parts.append(
            markdown_table(
                ["ID", "System", "Subset", "WER (%)", "Reference", "Hypothesis"],
                [
                    [r.get("id", ""), r.get("system", ""), r.get("subset", ""), f"{100 * float(r['wer']):.1f}",
                     _clip(r.get("ref", "")), _clip(r.get("hyp", ""))]
                    for r in worst
                ],
            )
        )
        parts.append("")
    parts.append(f"Text normalizer: `{summary.get('normalizer', normalizer_name())}`. "
                 "WER/CER/accuracy are corpus-level (total errors / total reference tokens).")
    return "\n".join(parts) + "\n"


def _clip(text: Any, width: int = 120) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _md_cell(value: Any) -> str:
    # Pipes would end the cell and newlines the row, so escape/flatten them.
    return " ".join(str(value).split()).replace("|", "\\|") if value is not None else ""


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """GitHub-flavoured Markdown table; ``align`` per column is "l", "r" or "c" (default: first
    column left, columns whose every cell looks numeric right-aligned). Cells are str()-ed."""
    ncol = len(headers)
    for i, row in enumerate(rows):
        if len(row) != ncol:
            raise ValueError(f"row {i} has {len(row)} cells, expected {ncol}")
    if align is None:
        align = ["l"] + ["r" if rows and all(_looks_numeric(row[c]) for row in rows) else "l" for c in range(1, ncol)]
    if len(align) != ncol:
        raise ValueError(f"align has {len(align)} entries, expected {ncol}")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "| " + " | ".join(rule[a] for a in align) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _looks_numeric(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    s = str(value).strip().rstrip("%")
    if s in ("-", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False


def _metric_label(metric: str, compact: bool = False) -> str:
    """"WER (%)" for headings; compact "WER %" inside another parenthesis (table corner cell)."""
    name = metric.upper() if len(metric) <= 3 else metric.capitalize()
    if metric not in PERCENT_METRICS:
        return name
    return f"{name} %" if compact else f"{name} (%)"


def _fmt_value(metric: str, value: Any) -> str:
    """Percent with 1 decimal for rate metrics; '-' for missing/NaN; ints as-is; 4 significant digits otherwise."""
    if value is None or isinstance(value, bool):
        return "-"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "-"
        if metric in PERCENT_METRICS:
            return f"{100 * value:.1f}"
        if isinstance(value, int):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _metrics_in(by_system: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    seen: dict[str, None] = {}
    for subsets in by_system.values():
        for vals in subsets.values():
            for k in vals:
                seen.setdefault(k, None)
    return list(seen)


def _comparison_cells(
    summary_by_system: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str
) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells shared by the Markdown and rich tables.

    Columns are subsets in first-seen order (the pooled ``"all"`` subset last), then ``Utts``: the
    ``"all"`` subset's n if present, else the sum of n over subsets (each utterance is in one subset).
    """
    subsets: dict[str, None] = {}
    for per_subset in summary_by_system.values():
        for s in per_subset:
            subsets.setdefault(s, None)
    cols = [s for s in subsets if s != ALL_SUBSET] + ([ALL_SUBSET] if ALL_SUBSET in subsets else [])
    headers = [f"System ({_metric_label(metric, compact=True)})"] + cols + ["Utts"]
    rows: list[list[str]] = []
    for system, per_subset in summary_by_system.items():
        cells = [str(system)]
        for s in cols:
            vals = per_subset.get(s)
            cells.append(_fmt_value(metric, vals.get(metric)) if isinstance(vals, Mapping) else "-")
        if ALL_SUBSET in per_subset and isinstance(per_subset[ALL_SUBSET].get("n"), int):
            n_total: int | None = per_subset[ALL_SUBSET]["n"]
        else:
            ns = [v.get("n") for k, v in per_subset.items() if k != ALL_SUBSET and isinstance(v, Mapping)]
            n_total = sum(n for n in ns if isinstance(n, int)) if any(isinstance(n, int) for n in ns) else None
        cells.append("-" if n_total is None else str(n_total))
        rows.append(cells)
    return headers, rows


def comparison_table(
    summary_by_system: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "wer"
) -> str:
    """Markdown table: one row per system, one column per subset (``metric``, percent with 1 decimal
    for wer/cer/accuracy), and a final ``Utts`` column with the number of utterances."""
    headers, rows = _comparison_cells(summary_by_system, metric)
    return markdown_table(headers, rows, align=["l"] + ["r"] * (len(headers) - 1))


def comparison_rich_table(
    summary_by_system: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "wer", title: str | None = None
) -> Any:
    """The same comparison as a ``rich.table.Table``; the best value per subset column is bold green."""
    from rich.table import Table  # lazy: only terminal output needs rich

    headers, rows = _comparison_cells(summary_by_system, metric)
    table = Table(title=title or f"{_metric_label(metric)} by system and subset")
    table.add_column(headers[0], style="bold")
    for h in headers[1:]:
        table.add_column(h, justify="right")
    higher = HIGHER_IS_BETTER.get(metric, False)
    best: dict[int, float] = {}
    for c in range(1, len(headers) - 1):
        vals = [float(r[c].rstrip("%")) for r in rows if r[c] not in ("-", "") and _looks_numeric(r[c])]
        if len(vals) > 1:
            best[c] = max(vals) if higher else min(vals)
    for r in rows:
        cells = [
            f"[bold green]{cell}[/]" if c in best and cell != "-" and _looks_numeric(cell) and float(cell.rstrip("%")) == best[c] else cell
            for c, cell in enumerate(r)
        ]
        cells[0] = r[0].replace("[", "\\[")  # system names like "tiny.en [int8]" are not markup
        table.add_row(*cells)
    return table


def print_comparison(
    summary_by_system: Mapping[str, Mapping[str, Mapping[str, Any]]],
    metric: str = "wer",
    title: str | None = None,
    console: Any = None,
) -> Any:
    """Print :func:`comparison_rich_table` to ``console`` (a ``rich.console.Console``; default stdout) and return the table."""
    from rich.console import Console

    table = comparison_rich_table(summary_by_system, metric=metric, title=title)
    (console or Console()).print(table)
    return table


# --------------------------------------------------------------------------------------------------
# Loss curves
# --------------------------------------------------------------------------------------------------


def read_loss_log(log_jsonl_path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """Parse a training log into ``{split: [(step, loss), ...]}`` sorted by step.

    Lines without a finite numeric ``loss``/``step`` are skipped, as are malformed lines (a trainer
    may be mid-write on the last one). A missing ``split`` means ``"train"``. If a step appears twice
    in a split (a resumed run re-logging), the later line wins so the curve does not zigzag.
    """
    path = Path(log_jsonl_path)
    if not path.exists():
        raise FileNotFoundError(f"training log not found: {path}")
    series: dict[str, dict[float, float]] = {}
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(rec, dict):
                continue
            step, loss = rec.get("step"), rec.get("loss")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (step, loss)):
                continue
            if not (math.isfinite(step) and math.isfinite(loss)):
                continue
            series.setdefault(str(rec.get("split") or "train"), {})[float(step)] = float(loss)
    if bad:
        log.warning("%s: skipped %d malformed line(s)", path, bad)
    return {split: sorted(points.items()) for split, points in series.items()}


def _smooth(values: list[float], window: int) -> list[float]:
    """Centered moving average (window shrinks at the ends).

    Centered rather than an EMA because an EMA lags a steeply falling loss and draws the trend
    visibly above the raw points early in training.
    """
    import numpy as np

    half = max(window // 2, 0)
    y = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(len(y))
    lo = np.clip(idx - half, 0, len(y))
    hi = np.clip(idx + half + 1, 0, len(y))
    return ((csum[hi] - csum[lo]) / (hi - lo)).tolist()


def plot_loss_curve(
    log_jsonl_path: str | os.PathLike, png_path: str | os.PathLike, title: str | None = None
) -> Path:
    """Draw loss vs step (train, val and any other split) from a JSONL training log into a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot global state, no display needed) and writes the
    PNG atomically. With many train points the raw curve is faded and a moving average drawn over it; sparse
    series get markers so a single point is visible. A log with no loss points still yields a PNG
    stating so (and a warning), so callers can always link the file. Returns the PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    src = Path(log_jsonl_path)
    series = read_loss_log(src)
    png = Path(png_path)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title or f"Loss: {src.name}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    n_points = sum(len(p) for p in series.values())
    if n_points == 0:
        msg = f"No loss values logged yet in {src.name}"
        log.warning("%s: %s", src, msg)
        ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        # Train first so val/test are drawn on top; stable colours by split name.
        colours = {"train": "tab:blue", "val": "tab:orange", "valid": "tab:orange", "test": "tab:green"}
        for split in sorted(series, key=lambda s: (s != "train", s)):
            pts = series[split]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            colour = colours.get(split)
            marker = "o" if len(pts) <= 50 or split != "train" else None
            if split == "train" and len(pts) > 50:
                ax.plot(xs, ys, color=colour, alpha=0.3, linewidth=0.8, label=f"{split} (raw)")
                ax.plot(xs, _smooth(ys, window=max(5, len(ys) // 40)), color=colour, linewidth=1.5, label=f"{split} (smoothed)")
            else:
                ax.plot(xs, ys, color=colour, marker=marker, markersize=4, linewidth=1.5, label=f"{split} ({len(pts)} pts)")
        ys_all = [y for pts in series.values() for _, y in pts]
        # Loss often falls by orders of magnitude; a log axis keeps the tail readable.
        if min(ys_all) > 0 and max(ys_all) / min(ys_all) > 20:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_open(png, "wb") as f:
        fig.savefig(f, format="png")
    return png

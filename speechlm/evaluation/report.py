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

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from speechlm.evaluation.metrics import HIGHER_IS_BETTER, METRICS, normalizer_name, utterance_wer
from speechlm.utils import atomic_open, looks_numeric, markdown_table, write_json, write_jsonl

__all__ = [
    "ALL_SUBSET",
    "summarize_rows",
    "write_eval_outputs",
    "markdown_table",
    "comparison_table",
    "comparison_rich_table",
    "print_comparison",
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
        vals = [float(r[c].rstrip("%")) for r in rows if r[c] not in ("-", "") and looks_numeric(r[c])]
        if len(vals) > 1:
            best[c] = max(vals) if higher else min(vals)
    for r in rows:
        cells = [
            f"[bold green]{cell}[/]" if c in best and cell != "-" and looks_numeric(cell) and float(cell.rstrip("%")) == best[c] else cell
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

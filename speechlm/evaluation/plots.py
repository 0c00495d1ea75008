"""Multi-task evaluation plots: a radar chart of systems over tasks, and an annotated confusion matrix.

Like :func:`speechlm.evaluation.report.plot_loss_curve`, both draw on matplotlib's Agg canvas (no pyplot global
state, no display) and write the PNG atomically via :func:`speechlm.utils.atomic_open`.
"""

from __future__ import annotations

import logging
import math
import textwrap
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechlm.utils import atomic_open

__all__ = ["RATE_METRICS", "metric_direction", "normalize_scores", "radar_chart", "confusion_matrix_png"]

log = logging.getLogger(__name__)

RATE_METRICS = frozenset({"wer", "cer"})
"""Lower-is-better error rates on a 0..1 scale (values above 1 are possible and clip to score 0)."""


def _metric_name(task: str) -> str:
    """The metric part of a radar axis key: ``"asr/wer"``, ``"asr:wer"`` or ``"wer"`` -> ``"wer"``."""
    for sep in ("/", ":"):
        if sep in task:
            task = task.rsplit(sep, 1)[1]
    return task.strip().lower()


def metric_direction(task: str) -> bool | None:
    """True if a larger value is better for this axis key, False if smaller, None if unknown.

    Looks the metric part of the key (see :func:`_metric_name`) up in
    :data:`speechlm.evaluation.metrics.HIGHER_IS_BETTER` and :data:`speechlm.evaluation.taskmetrics.TASK_HIGHER_IS_BETTER`.
    """
    from speechlm.evaluation.metrics import HIGHER_IS_BETTER
    from speechlm.evaluation.taskmetrics import TASK_HIGHER_IS_BETTER

    table = {**TASK_HIGHER_IS_BETTER, **HIGHER_IS_BETTER}
    name = _metric_name(task)
    return table.get(name, table.get(task))


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def normalize_scores(
    scores: Mapping[str, Mapping[str, Any]],
    higher_is_better: Mapping[str, bool] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[list[str], dict[str, list[float | None]], dict[str, str]]:
    """Map every score to 0..1, higher = better, the way :func:`radar_chart` draws them.

    Per task (axis): the direction is ``higher_is_better[task]``, else :func:`metric_direction`, else
    higher-is-better (logged). The raw range ``(lo, hi)`` is ``ranges[task]`` if given; else ``(0, 1)``
    for WER/CER and for any task whose values all lie in [0, 1] (accuracy, F1, ROUGE...); then
    ``s = clip((x - lo) / (hi - lo), 0, 1)`` and lower-is-better metrics are flipped: ``s = 1 - s``
    (so WER 0.25 -> 0.75, WER >= 1 -> 0). Values outside [0, 1] without a given range (e.g. a boundary
    error in ms) are scored *relative to the best system*: ``min / x`` if lower is better, ``x / max``
    if higher (best system = 1, clipped to 0..1). A missing / None / NaN score stays ``None``.

    Returns ``(tasks in first-seen order, {system: [score per task]}, {task: how it was scaled})``.
    """
    tasks: list[str] = []
    for per_task in scores.values():
        for t in per_task:
            if t not in tasks:
                tasks.append(t)
    how: dict[str, str] = {}
    scaled: dict[str, list[float | None]] = {s: [] for s in scores}
    for t in tasks:
        hib = (higher_is_better or {}).get(t)
        if hib is None:
            hib = metric_direction(t)
        if hib is None:
            log.info("radar: direction of %r unknown, assuming higher is better", t)
            hib = True
        vals = [_finite(per_task.get(t)) for per_task in scores.values()]
        present = [v for v in vals if v is not None]
        if ranges and t in ranges:
            lo, hi = map(float, ranges[t])
            kind = f"{lo:g}..{hi:g}"
        elif _metric_name(t) in RATE_METRICS or all(0.0 <= v <= 1.0 for v in present):
            lo, hi, kind = 0.0, 1.0, "0..1"
        else:
            # Unbounded scale (e.g. ms): relative to the best system, which gets 1.
            best = max(present) if hib else min(present)
            how[t] = f"{'x / max' if hib else 'min / x'}, relative to best"
            for system, v in zip(scores, vals):
                if v is None:
                    scaled[system].append(None)
                elif hib:
                    scaled[system].append(min(1.0, max(0.0, v / best)) if best > 0 else 1.0)
                else:
                    scaled[system].append(min(1.0, max(0.0, best / v)) if v > 0 else 1.0)
            continue
        how[t] = f"{'1 - x' if not hib else 'x'}, {kind}"
        for system, v in zip(scores, vals):
            if v is None:
                scaled[system].append(None)
                continue
            s = (v - lo) / (hi - lo) if hi != lo else 1.0
            s = min(1.0, max(0.0, s))
            scaled[system].append(s if hib else 1.0 - s)
    return tasks, scaled, how


def _new_figure(figsize: tuple[float, float], dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, png: str | os.PathLike) -> Path:
    png = Path(png)
    with atomic_open(png, "wb") as f:
        # tight: a legend placed outside the axes (the radar's) is kept in the picture, not cut off
        fig.savefig(f, format="png", bbox_inches="tight", pad_inches=0.2)
    return png


def radar_chart(
    scores: Mapping[str, Mapping[str, Any]],
    png: str | os.PathLike,
    title: str | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """One radar (spider) chart: an axis per task, a polygon per system; returns the PNG path.

    ``scores``: ``{system: {task: value}}``. Axis keys name the metric, ideally as ``"task/metric"``
    (``"asr/wer"``, ``"emotion/accuracy_f1"``) so its direction is known. Every value is mapped to 0..1
    with higher = better by :func:`normalize_scores`: WER-like metrics are flipped (``1 - WER``, clipped
    to 0..1), scores already in 0..1 are drawn as they are, unbounded ones relative to the best system
    (``min / x`` for lower-is-better, e.g. boundary error in ms).
    Axis labels say which (``1 - x`` marks a flipped axis). A system missing a task is drawn at 0 there
    and its legend entry lists the missing tasks.
    """
    tasks, scaled, how = normalize_scores(scores, higher_is_better=higher_is_better, ranges=ranges)
    fig = _new_figure((8.0, 8.0))
    ax = fig.add_subplot(1, 1, 1, projection="polar")
    ax.set_title(title or "Scores by task (1 = best)", pad=24)
    if not tasks or not scaled:
        ax.text(0.5, 0.5, "No scores", ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        return _save(fig, png)
    n = len(tasks)
    angles = [2 * math.pi * i / n for i in range(n)]
    loop = angles + angles[:1]
    colours = [f"C{i % 10}" for i in range(len(scaled))]
    for (system, vals), colour in zip(scaled.items(), colours):
        missing = [t for t, v in zip(tasks, vals) if v is None]
        ys = [0.0 if v is None else v for v in vals]
        # the task part of "task/metric" is enough to say which axes have no score; wrapped to the legend's width
        label = str(system) + (f" (no score: {', '.join(dict.fromkeys(str(t).split('/')[0] for t in missing))})" if missing else "")
        label = "\n".join(textwrap.wrap(label, 90, subsequent_indent="  "))
        ax.plot(loop, ys + ys[:1], color=colour, linewidth=1.8, marker="o", markersize=4, label=label)
        ax.fill(loop, ys + ys[:1], color=colour, alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{t}\n({how[t]})" for t in tasks], fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["0.25", "0.5", "0.75", "1"], fontsize=7, color="grey")
    ax.tick_params(axis="x", pad=14)
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, png)


def confusion_matrix_png(
    matrix: Sequence[Sequence[float]],
    labels: Sequence[str],
    png: str | os.PathLike,
    title: str | None = None,
    col_labels: Sequence[str] | None = None,
) -> Path:
    """Heat map of a confusion matrix: rows = reference, columns = hypothesis; returns the PNG path.

    Cells show the raw counts; colours are row-normalized (each row divided by its total, i.e. recall
    per reference class), so rare and frequent classes are equally readable. ``col_labels`` defaults to
    ``labels``, plus ``"(other)"`` when the matrix has one column more than there are labels (the shape
    :func:`speechlm.evaluation.taskmetrics.accuracy_f1` returns).
    """
    import numpy as np

    m = np.asarray(matrix, dtype=float).reshape(len(matrix), -1) if len(matrix) else np.zeros((0, 0))
    if m.shape[0] != len(labels):
        raise ValueError(f"matrix has {m.shape[0]} rows but {len(labels)} labels")
    if col_labels is None:
        from speechlm.evaluation.taskmetrics import OTHER

        col_labels = list(labels) + ([OTHER] if m.shape[1] == len(labels) + 1 else [])
    if m.shape[1] != len(col_labels):
        raise ValueError(f"matrix has {m.shape[1]} columns but {len(col_labels)} column labels")
    totals = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    n_r, n_c = m.shape
    size = max(4.0, min(20.0, 1.5 + 0.55 * max(n_r, n_c)))
    fig = _new_figure((size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title or "Confusion matrix (colour: row-normalized)")
    if n_r == 0 or n_c == 0:
        ax.text(0.5, 0.5, "Empty matrix", ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        return _save(fig, png)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference row")
    fontsize = 9 if max(n_r, n_c) <= 12 else 7 if max(n_r, n_c) <= 25 else 5
    for i in range(n_r):
        for j in range(n_c):
            v = m[i, j]
            text = str(int(v)) if float(v).is_integer() else f"{v:.2g}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n_c))
    ax.set_xticklabels([str(c) for c in col_labels], rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(n_r))
    ax.set_yticklabels([str(r) for r in labels], fontsize=fontsize)
    ax.set_xlabel("hypothesis")
    ax.set_ylabel("reference")
    fig.tight_layout()
    return _save(fig, png)

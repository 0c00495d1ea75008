"""The training loss curve: ``loss.png`` from a run's JSONL training log (train, val and any other split).

Owned by training because the loop draws it at the end of every run; evaluation reports link to it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from speechlm.utils import atomic_open

__all__ = ["plot_loss_curve", "read_loss_log"]

log = logging.getLogger(__name__)


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

"""The metric registry: every metric a task can name (``Task.metric``), keyed by name.

ASR metrics (WER, CER, exact-match accuracy) come from :mod:`speechlm.evaluation.wer`, the per-task metrics
(accuracy/macro-F1, word-timestamp boundary error, token F1, ROUGE-L, keyword F1) from
:mod:`speechlm.evaluation.taskmetrics`. Each entry: ``fn(refs, hyps, normalize=True) -> dict`` holding the
metric's own key and ``"n"``.
"""

from __future__ import annotations

from typing import Sequence

from speechlm.evaluation.taskmetrics import TASK_HIGHER_IS_BETTER, TASK_METRICS
from speechlm.evaluation.wer import (  # noqa: F401  (re-exported: the metric functions live beside the registry)
    MetricFn,
    accuracy,
    cer,
    cer_details,
    normalize_english,
    normalizer_name,
    utterance_wer,
    wer_details,
)

__all__ = ["HIGHER_IS_BETTER", "METRICS", "MetricFn", "accuracy", "cer", "cer_details", "compute_metric",
           "normalize_english", "normalizer_name", "utterance_wer", "wer_details"]

# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

# Task configs refer to metrics by these keys. Each callable: (refs, hyps, normalize=True) -> dict,
# where the dict always holds the metric's own key (e.g. "wer") and "n" (number of utterances).
METRICS: dict[str, MetricFn] = {
    "wer": wer_details,
    "cer": cer_details,
    "accuracy": accuracy,
}

# Whether a larger value is better, so reports can pick the best system without hard-coding names.
HIGHER_IS_BETTER: dict[str, bool] = {"wer": False, "cer": False, "accuracy": True}


def compute_metric(
    name: str, refs: Sequence[str | None], hyps: Sequence[str | None], normalize: bool = True
) -> dict[str, float | int]:
    """Look up ``name`` in :data:`METRICS` and apply it; unknown names list the valid keys."""
    try:
        fn = METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None
    return fn(refs, hyps, normalize=normalize)


METRICS.update(TASK_METRICS)
HIGHER_IS_BETTER.update(TASK_HIGHER_IS_BETTER)

"""Multi-task training data: which manifest lines serve which task, and how often each task is sampled.

A line serves a task when it carries the task's target field (a line with `gender` and `text` serves ASR
and gender classification). A field that is present but invalid (a label outside the task's set) is an
error naming the line, found before training starts; a missing field just means the line does not serve it.

Sampling (T5, Raffel et al. 2020, sec. 3.5.2; OSUM's task ratios): task i with n_i eligible lines and weight
w_i gets probability p_i ∝ (w_i · n_i)^(1/T). T=1 follows the weighted data sizes; larger T flattens towards
uniform so small tasks are not drowned. An epoch holds sum(n_i) examples, round(p_i · sum n) of them task i,
drawn without replacement within each pass over that task's lines (deterministic given the seed).
"""

from __future__ import annotations

import numpy as np

from speechlm.data.manifest import Cut, ManifestError
from speechlm.tasks import Task, get_task


def parse_task_weights(specs: list[str]) -> dict[str, float]:
    """["asr", "ser:2"] -> {"asr": <record weight>, "ser": 2.0}; unknown names list the registered ones."""
    weights: dict[str, float] = {}
    for spec in specs:
        name, _, w = spec.partition(":")
        task = get_task(name.strip())
        try:
            weights[task.name] = float(w) if w else float(task.weight)
        except ValueError:
            raise ValueError(f"task weight {spec!r}: expected name or name:weight, e.g. ser:2") from None
        if weights[task.name] < 0:
            raise ValueError(f"task weight {spec!r} is negative")
    return weights


def task_probabilities(sizes: dict[str, int], weights: dict[str, float], temperature: float = 1.0) -> dict[str, float]:
    """p_i ∝ (w_i · n_i)^(1/T) over tasks with data."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    raw = {k: (weights[k] * sizes[k]) ** (1.0 / temperature) for k in sizes if sizes[k] > 0 and weights[k] > 0}
    total = sum(raw.values())
    if total == 0:
        raise ValueError("no task has both data and a positive weight")
    return {k: v / total for k, v in raw.items()}


def eligible(cuts: list[Cut], task: Task) -> list[int]:
    """Indices of the cuts that serve ``task``; invalid values raise ManifestError naming file:line and field."""
    out = []
    for i, c in enumerate(cuts):
        value = c.text if task.target == "text" else c.labels.get(task.target)
        if value is None or value == "" or value == []:
            continue
        try:
            task.target_text(c.text, c.labels)
        except ValueError as e:
            raise ManifestError(f"{c.source or c.id}: field {task.target!r}: {e}") from None
        out.append(i)
    return out


def build_mixture(cuts: list[Cut], weights: dict[str, float], temperature: float = 1.0, seed: int = 0
                  ) -> tuple[list[Cut], list[Task], dict]:
    """The example list of one epoch plan: (cut, task) pairs by the sampling rule above, and a report."""
    tasks = {name: get_task(name) for name in weights}
    pools = {name: eligible(cuts, t) for name, t in tasks.items()}
    empty = [f"{n} (field {tasks[n].target!r})" for n, p in pools.items() if not p]
    if empty:
        raise ManifestError(f"no manifest line carries the field these tasks need: {', '.join(empty)}")
    sizes = {n: len(p) for n, p in pools.items()}
    probs = task_probabilities(sizes, weights, temperature)
    total = sum(sizes.values())
    rng = np.random.default_rng(seed)
    ex_cuts: list[Cut] = []
    ex_tasks: list[Task] = []
    counts = {}
    for name, p in probs.items():
        k = max(1, round(p * total))
        pool = np.asarray(pools[name])
        reps = -(-k // len(pool))  # passes over this task's lines
        picks = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:k]
        ex_cuts += [cuts[i] for i in picks]
        ex_tasks += [tasks[name]] * k
        counts[name] = k
    report = {"eligible": sizes, "probabilities": probs, "examples": counts, "temperature": temperature}
    return ex_cuts, ex_tasks, report

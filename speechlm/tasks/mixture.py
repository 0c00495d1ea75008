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

from dataclasses import dataclass

import numpy as np

from speechlm.data.manifest import Cut, ManifestError
from speechlm.tasks.record import Task, get_task


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
    check_distinct_instructions(list(weights))
    return weights


def check_distinct_instructions(names: list[str]) -> None:
    """Tasks trained together must not share an instruction paraphrase: the instruction is all the model has
    to tell which answer is wanted (e.g. `ser` answers a label, `asr+ser` a transcript and then the label)."""
    seen: dict[str, str] = {}
    for name in names:
        task = get_task(name)
        for instruction in (*task.instructions, *task.eval_instructions):
            other = seen.setdefault(instruction, name)
            if other != name:
                raise ValueError(f"tasks {other!r} and {name!r} share the instruction {instruction!r}: trained together, "
                                 "the model cannot tell which answer is wanted; give one of them paraphrases of its own")


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
        if task.asr_prefix and not (c.text or "").strip():
            continue  # ASR+X needs the transcript too: a label-only line serves the plain X task instead
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


# ---------------------------------------------------------------------------------------------------
# curriculum
# ---------------------------------------------------------------------------------------------------
TRAINABLE_PARTS = ("adapter", "lora", "encoder", "ctc", "labels")
"""What a stage may train: the adapter, the LLM's LoRA, the encoder's unfrozen top layers (if the model has them),
the CTC head's blank and scale (trained whenever the stage's CTC weight is above 0)."""


@dataclass(frozen=True)
class Stage:
    """One row of a recipe's stage table (SpeechVerse-style curriculum: e.g. ASR first, then everything)."""

    steps: int
    """Optimizer steps in this stage."""
    tasks: tuple[str, ...]
    """Task names with optional weights (`ser:2`)."""
    trainable: tuple[str, ...]
    """Parts trained in this stage (subset of TRAINABLE_PARTS)."""
    lm: float = 1.0
    """Weight of the LM loss; 0 skips the LLM forward entirely (a CTC-only alignment stage)."""
    ctc: float | None = None
    """Weight of the CTC alignment loss; None: train.ctc_weight."""
    label: float | None = None
    """Weight of the clip-level label loss (speechlm.model.labels); None: train.label_weight."""


def parse_stages(rows: list[dict], max_steps: int, where: str = "train.stages") -> list[Stage]:
    """Check a stage table: known keys, tasks and parts, positive steps that add up to train.max_steps."""
    stages = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{at}: expected a mapping with steps, tasks, trainable")
        unknown = set(row) - {"steps", "tasks", "trainable", "lm", "ctc", "label"}
        if unknown:
            raise ValueError(f"{at}: unknown key(s) {sorted(unknown)}; a stage has steps, tasks, trainable, lm, ctc, label")
        steps = row.get("steps")
        if not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"{at}.steps: expected a positive integer, got {steps!r}")
        tasks = row.get("tasks")
        tasks = [tasks] if isinstance(tasks, str) else tasks
        if not tasks:
            raise ValueError(f"{at}.tasks: a stage needs at least one task")
        try:
            parse_task_weights(list(tasks))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{at}.tasks: {e.args[0] if e.args else e}") from None
        parts = row.get("trainable", "adapter+lora")
        parts = tuple(p.strip() for p in (parts.split("+") if isinstance(parts, str) else parts))
        bad = [p for p in parts if p not in TRAINABLE_PARTS]
        if bad or not parts:
            raise ValueError(f"{at}.trainable: unknown part(s) {bad}; choose from {'+'.join(TRAINABLE_PARTS)}")
        weights = {}
        for key in ("lm", "ctc", "label"):
            w = row.get(key)
            if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0):
                raise ValueError(f"{at}.{key}: expected a loss weight >= 0, got {w!r}")
            weights[key] = None if w is None else float(w)
        if weights["lm"] == 0 and not (weights["ctc"] or weights["label"]):
            raise ValueError(f"{at}: lm is 0, so the stage needs a ctc or label weight above 0 (or it would train nothing)")
        stages.append(Stage(steps=steps, tasks=tuple(tasks), trainable=parts,
                            lm=1.0 if weights["lm"] is None else weights["lm"], ctc=weights["ctc"], label=weights["label"]))
    total = sum(s.steps for s in stages)
    if stages and total != max_steps:
        raise ValueError(f"{where}: stage steps add up to {total}, but train.max_steps is {max_steps}")
    return stages


def stage_at(stages: list[Stage], step: int) -> int:
    """Index of the stage that optimizer step ``step`` (0-based count of steps done) belongs to."""
    end = 0
    for i, s in enumerate(stages):
        end += s.steps
        if step < end:
            return i
    return len(stages) - 1


def set_trainable(model, names: set[str], parts: tuple[str, ...]) -> None:
    """Freeze or unfreeze the model's trainable parameters by part for a stage."""
    for n, p in model.named_parameters():
        if n in names:
            part = ("lora" if "lora_" in n else "adapter" if n.startswith("adapter.") else "ctc" if n.startswith("ctc.")
                    else "labels" if n.startswith("label_head.") else "encoder")
            p.requires_grad_(part in parts)

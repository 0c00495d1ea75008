"""Tasks are data: a record says how a manifest line becomes a prompt and a target, and how it is scored.

A ``Task`` holds the user-message template (with the ``{audio}`` placeholder and an ``{instruction}``),
a pool of instruction paraphrases for training and a disjoint pool kept for evaluation (SpeechVerse,
Das et al. 2024, measures zero-shot instruction following this way), the manifest field that is the target,
the loss-mask rule, the metric key (``speechlm.metrics.METRICS``), an optional closed label set, a sampling
weight and a curriculum stage. ``base=`` inherits every field not given, so a new task is one record:

    register(Task(name="asr-digits", base="asr", metric="accuracy", labels=("zero", ..., "nine")))
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

_UNSET: Any = None


@dataclass(frozen=True)
class Task:
    name: str
    """Registry key (`speechlm ls tasks`)."""
    base: str | None = None
    """Name of a registered task whose fields fill in every field left unset here."""
    description: str = _UNSET
    """One line for `speechlm ls tasks`."""
    template: str = _UNSET
    """User message; `{audio}` marks where the audio tokens go, `{instruction}` the chosen paraphrase."""
    instructions: tuple[str, ...] = _UNSET
    """Training pool of instruction paraphrases (one is drawn per example)."""
    eval_instructions: tuple[str, ...] = _UNSET
    """Held-out paraphrases, never seen in training, used to score zero-shot instruction following."""
    target: str = _UNSET
    """Manifest field holding the answer: `text` or a label name (looked up in the line's labels)."""
    target_template: str = _UNSET
    """How the answer is written; `{target}` is the field's value."""
    loss_mask: str = _UNSET
    """`answer`: loss on the answer tokens and the end-of-turn token only (prompt and audio masked)."""
    metric: str = _UNSET
    """Metric key in speechlm.metrics.METRICS (wer, cer, accuracy)."""
    labels: tuple[str, ...] | None = _UNSET
    """Closed label set, or None for free text."""
    weight: float = _UNSET
    """Sampling weight in multi-task training."""
    stage: int = _UNSET
    """First curriculum stage the task is trained in."""

    def instruction(self, rng: random.Random, held_out: bool = False) -> str:
        pool = self.eval_instructions if held_out and self.eval_instructions else self.instructions
        return rng.choice(pool)

    def user_message(self, instruction: str, audio_token: str) -> str:
        return self.template.format(audio=audio_token, instruction=instruction)

    def target_text(self, text: str | None, labels: dict[str, Any]) -> str:
        value = text if self.target == "text" else labels.get(self.target)
        if value is None or str(value).strip() == "":
            raise ValueError(f"task {self.name!r}: missing or empty field {self.target!r}")
        value = str(value).strip()
        if self.labels is not None and value not in self.labels:
            raise ValueError(f"task {self.name!r}: label {value!r} not in {list(self.labels)}")
        return self.target_template.format(target=value)


TASKS: dict[str, Task] = {}
"""Task registry keyed by name."""


def register(task: Task) -> Task:
    """Resolve ``base=`` inheritance, check the record, add it to ``TASKS``."""
    if task.base is not None:
        if task.base not in TASKS:
            raise KeyError(f"task {task.name!r}: base {task.base!r} is not registered")
        parent = TASKS[task.base]
        filled = {f.name: getattr(parent, f.name) for f in dataclasses.fields(Task)
                  if f.name not in ("name", "base") and getattr(task, f.name) is None}
        task = dataclasses.replace(task, **filled)
    missing = [f.name for f in dataclasses.fields(Task) if f.name not in ("base", "labels") and getattr(task, f.name) is None]
    if missing:
        raise ValueError(f"task {task.name!r}: fields not set: {', '.join(missing)}")
    if "{audio}" not in task.template:
        raise ValueError(f"task {task.name!r}: template must contain {{audio}}")
    if set(task.instructions) & set(task.eval_instructions):
        raise ValueError(f"task {task.name!r}: training and held-out instruction pools overlap")
    if task.loss_mask not in ("answer",):
        raise ValueError(f"task {task.name!r}: unknown loss_mask {task.loss_mask!r}")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


register(Task(
    name="asr",
    description="Speech recognition: write down what is said.",
    template="{audio}\n{instruction}",
    instructions=(
        "Transcribe the audio.",
        "Write down exactly what is said in this recording.",
        "What does the speaker say? Give the transcript.",
        "Please transcribe this speech.",
        "Convert the spoken words in the audio to text.",
        "Repeat the words you hear, verbatim.",
    ),
    eval_instructions=(
        "Provide a word-for-word transcription of the clip.",
        "Listen and type out the speech.",
        "Turn this recording into written text.",
    ),
    target="text",
    target_template="{target}",
    loss_mask="answer",
    metric="wer",
    labels=None,
    weight=1.0,
    stage=0,
))

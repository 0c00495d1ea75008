"""Tasks are data: a record says how a manifest line becomes a prompt and a target, and how it is scored.

A ``Task`` holds the user-message template (with the ``{audio}`` placeholder and an ``{instruction}``),
a pool of instruction paraphrases for training and a disjoint pool kept for evaluation (SpeechVerse,
Das et al. 2024, measures zero-shot instruction following this way), the manifest field that is the target,
the loss-mask rule, the metric key (``speechlm.evaluation.metrics.METRICS``), an optional closed label set, a sampling
weight and a curriculum stage. ``base=`` inherits every field not given, so a new task is one record:

    register(Task(name="asr-digits", base="asr", metric="accuracy", labels=("zero", ..., "nine")))

A field left as None inherits from the base; to get a free-text task (``labels=None``) derive from one.
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
    """Metric key in speechlm.evaluation.metrics.METRICS (wer, cer, accuracy, accuracy_f1, timestamps, token_f1, rouge_l, keyword_f1)."""
    labels: tuple[str, ...] | None = _UNSET
    """Closed label set, or None for free text."""
    label_aliases: tuple[tuple[str, str], ...] = _UNSET
    """(corpus value, canonical label) pairs, e.g. EmoDB's `anger` -> `angry`, applied before the label check."""
    answer_format: str = _UNSET
    """How the target field becomes text: `plain` (str), `join` (a list joined with ", "), `timestamps`
    (word dicts -> `word<start,end>` ...)."""
    asr_prefix: bool = _UNSET
    """ASR+X (OSUM, Geng et al. 2025): the answer starts with the transcript, then `label_name: value`."""
    max_answer_tokens: int = _UNSET
    """Cap on generated answer tokens at inference: a label needs a few, word timestamps about 13 per word."""
    weight: float = _UNSET
    """Sampling weight in multi-task training."""
    stage: int = _UNSET
    """First curriculum stage the task is trained in."""
    inputs: tuple[tuple[str, str], ...] = _UNSET
    """ESPnet-style conditions (espnet2/speechlm/definitions.py): (field, modality) pairs, modality `text` or
    `speech`. Field `audio` is the clip; others are manifest fields (top level, then labels). The first input fills
    the template's `{audio}` slot. A record with no base and none given reads speech: `(("audio", "speech"),)`."""
    outputs: tuple[tuple[str, str], ...] = _UNSET
    """ESPnet-style targets, in answer order. Field `target` is this task's answer (`target_text`); `audio` a spoken
    answer's units. Default `(("target", "text"),)`: speech in, text out, as every record before these fields."""

    def instruction(self, rng: random.Random, held_out: bool = False) -> str:
        pool = self.eval_instructions if held_out and self.eval_instructions else self.instructions
        return rng.choice(pool)

    def user_message(self, instruction: str, audio_token: str) -> str:
        return self.template.format(audio=audio_token, instruction=instruction)

    def target_text(self, text: str | None, labels: dict[str, Any]) -> str:
        """The answer the model is trained to give for one manifest line."""
        value = text if self.target == "text" else labels.get(self.target)
        if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0) or str(value).strip() == "":
            raise ValueError(f"task {self.name!r}: missing or empty field {self.target!r}")
        value = ANSWER_FORMATS[self.answer_format](value)
        value = dict(self.label_aliases).get(value, value)
        if self.labels is not None and value not in self.labels:
            raise ValueError(f"task {self.name!r}: field {self.target!r}: label {value!r} not in {list(self.labels)}")
        answer = self.target_template.format(target=value)
        if self.asr_prefix and self.target != "text":
            if not text or not text.strip():
                raise ValueError(f"task {self.name!r}: ASR+X needs a transcript (field 'text')")
            answer = f"{text.strip()}\n{self.target}: {answer}"
        return answer

    def parse_answer(self, hyp: str) -> str:
        """The part of a generated answer that is scored: after `label_name:` for ASR+X answers."""
        if self.asr_prefix and self.target != "text":
            marker = f"{self.target}:"
            return hyp.rsplit(marker, 1)[1].strip() if marker in hyp else hyp.strip()
        return hyp.strip()


def _timestamps(value: Any) -> str:
    """[{"w": "hello", "start": 0.1, "end": 0.42}, ...] -> "hello<0.10,0.42> ..." (seconds, 2 decimals)."""
    if isinstance(value, str):
        return value
    return " ".join(f"{w['w']}<{float(w['start']):.2f},{float(w['end']):.2f}>" for w in value)


ANSWER_FORMATS: dict[str, Any] = {
    "plain": lambda v: str(v).strip(),
    "join": lambda v: ", ".join(str(x).strip() for x in v) if isinstance(v, (list, tuple)) else str(v).strip(),
    "timestamps": _timestamps,
}
"""How a target field's value is written as answer text, keyed by Task.answer_format."""

DEFAULT_INPUTS: tuple[tuple[str, str], ...] = (("audio", "speech"),)
DEFAULT_OUTPUTS: tuple[tuple[str, str], ...] = (("target", "text"),)
"""What a record that names no inputs/outputs (and has no base that does) means: speech in, text out."""

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
    if task.inputs is None or task.outputs is None:  # the defaults keep a record without them speech in -> text out
        task = dataclasses.replace(task, inputs=task.inputs or DEFAULT_INPUTS, outputs=task.outputs or DEFAULT_OUTPUTS)
    missing = [f.name for f in dataclasses.fields(Task) if f.name not in ("base", "labels") and getattr(task, f.name) is None]
    if missing:
        raise ValueError(f"task {task.name!r}: fields not set: {', '.join(missing)}")
    if "{audio}" not in task.template:
        raise ValueError(f"task {task.name!r}: template must contain {{audio}}")
    if set(task.instructions) & set(task.eval_instructions):
        raise ValueError(f"task {task.name!r}: training and held-out instruction pools overlap")
    if task.loss_mask not in ("answer",):
        raise ValueError(f"task {task.name!r}: unknown loss_mask {task.loss_mask!r}")
    bad = [io for io in task.inputs + task.outputs if len(io) != 2 or io[1] not in ("text", "speech")]
    if bad or not task.inputs or not task.outputs:
        raise ValueError(f"task {task.name!r}: inputs and outputs are non-empty (field, 'text'|'speech') pairs: {bad or 'empty'}")
    if task.answer_format not in ANSWER_FORMATS:
        raise ValueError(f"task {task.name!r}: unknown answer_format {task.answer_format!r}; known: {', '.join(ANSWER_FORMATS)}")
    if len(task.instructions) < 1 or (task.base is None and len(task.eval_instructions) < 1):
        raise ValueError(f"task {task.name!r}: needs training and held-out instructions")
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
    label_aliases=(),
    answer_format="plain",
    asr_prefix=False,
    max_answer_tokens=96,
    weight=1.0,
    stage=0,
))


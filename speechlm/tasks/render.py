"""One task record, three renderings: continuous chat prompt, units-in-vocabulary chat prompt, multi-stream rows.

Owns the spellings of speech tokens (``<|u12|>``, ``<|sosp|>``, ... : :data:`MARKERS`, :func:`unit_token`,
:func:`task_marker`), unit strings and their SpeechGPT-compatible import/export (``<sosp><12><873><eosp>``), and
the compilers from a :class:`~speechlm.tasks.record.Task` and a manifest line to what a model reads:
:func:`render_continuous` (today's path, ``<|audio|>`` filled by adapter frames), :func:`render_units`
(SpeechGPT, arXiv 2305.11000: speech spans inside the LLM's own chat template) and :func:`render_streams`
(ESPnet-SpeechLM, arXiv 2502.15218: ``[T, nq]`` rows with task and modality markers).
May import: utils, config, introspect, data, backbones (not model: the vocabulary layout is passed in and
used through its methods ``unit_id``, ``marker_id``, ``task_id``, ``codec_id``, ``pad_id``, ``nq``). No torch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SOSP, EOSP = "<|sosp|>", "<|eosp|>"
"""Start and end of a speech span (SpeechGPT's <sosp>/<eosp>, spelled so no BPE produces them by accident)."""
TA, UA = "<|ta|>", "<|ua|>"
"""Text answer and unit answer markers of chain-of-modality answers (SpeechGPT's [ta]/[ua])."""
SOT, EOT = "<|sot|>", "<|eot|>"
"""Start and end of a text segment in multi-stream rows (ESPnet's <text_bpe_start/end>)."""
SOS_EOS = "<|sos_eos|>"
"""Sequence start and end in multi-stream rows (ESPnet's <sos/eos>)."""
PAD = "<|pad|>"
"""Pad of streams >= 1 outside speech, and between delayed segments."""
MARKERS = (SOSP, EOSP, TA, UA, SOT, EOT, SOS_EOS, PAD)
"""The fixed markers in vocabulary order. Appending is safe for new layouts; reordering breaks checkpoints."""

SPEECH, TEXT = "speech", "text"
MODALITIES = (TEXT, SPEECH)
AUDIO_FIELD = "audio"
"""The field name of the clip itself (its units come from the caller)."""
TARGET_FIELD = "target"
"""The field name meaning "the task's answer" (``Task.target_text``: target field, answer format, ASR+X)."""


def unit_token(unit: int) -> str:
    return f"<|u{int(unit)}|>"


def task_marker(task: str) -> str:
    return f"<|task:{task}|>"


_UNIT = re.compile(r"<\|u(\d+)\|>")


def units_to_string(units) -> str:
    """[12, 873] -> ``<|sosp|><|u12|><|u873|><|eosp|>``."""
    return SOSP + "".join(unit_token(u) for u in units) + EOSP


def parse_units(text: str) -> list[list[int]]:
    """Every speech span's units in ``text``, in order (an unterminated last span counts, as when decoding stops)."""
    out = []
    for span in text.split(SOSP)[1:]:
        out.append([int(m) for m in _UNIT.findall(span.split(EOSP)[0])])
    return out


_SGPT_UNIT = re.compile(r"<(\d+)>")


def to_speechgpt(units) -> str:
    """Export as SpeechGPT writes units (speechgpt/utils/speech2unit/speech2unit.py): ``<sosp><12><873><eosp>``."""
    return "<sosp>" + "".join(f"<{int(u)}>" for u in units) + "<eosp>"


def from_speechgpt(text: str) -> list[int]:
    """Import a SpeechGPT unit string; units are read with its own regex ``<(\\d+)>`` (src/infer/cli_infer.py)."""
    body = text.strip()
    if not (body.startswith("<sosp>") and body.endswith("<eosp>")):
        raise ValueError(f"not a SpeechGPT unit string (needs <sosp>...<eosp>): {text[:60]!r}")
    inner = body[len("<sosp>"):-len("<eosp>")]
    units = [int(u) for u in _SGPT_UNIT.findall(inner)]
    if _SGPT_UNIT.sub("", inner).strip():
        raise ValueError(f"SpeechGPT unit string holds more than units: {text[:60]!r}")
    return units


def speechgpt_to_units_string(text: str) -> str:
    """Rewrite every SpeechGPT span in ``text`` (``<sosp><12><eosp>``) in this toolkit's spelling."""
    return re.sub(r"<sosp>(.*?)<eosp>", lambda m: units_to_string(from_speechgpt(m.group(0))), text)


def units_string_to_speechgpt(text: str) -> str:
    """Rewrite every ``<|sosp|>..<|eosp|>`` span in ``text`` in SpeechGPT's spelling."""
    pat = re.escape(SOSP) + r"(.*?)" + re.escape(EOSP)
    return re.sub(pat, lambda m: to_speechgpt(int(u) for u in _UNIT.findall(m.group(1))), text)


# ---- renderings ---------------------------------------------------------------------------------------
IGNORE = -100
LOSS_REGIONS = ("answer", "turn", "all")
"""Where the loss applies: ``answer`` (ours: answer tokens and the end of turn), ``turn`` (SpeechGPT masks only
the system prefix, src/train/cm_sft.py), ``all`` (SpeechGPT stage 1 and ESPnet ``loss_region: whole``)."""


@dataclass
class ChatRendering:
    """A chat-template rendering: the prompt, the answer, their ids and the labels of the loss region."""

    system: str
    """The system turn as rendered (the prefix SpeechGPT leaves out of the loss)."""
    prompt: str
    """Everything after the system turn up to the assistant's answer (the generation prompt included)."""
    answer: str
    """The answer text, without the end-of-turn token."""
    input_ids: list[int]
    """system + prompt + answer ids + end-of-turn."""
    labels: list[int]
    """``input_ids`` inside the loss region, IGNORE elsewhere."""
    audio_at: int | None = None
    """Continuous rendering: where in ``input_ids`` the adapter frames are spliced (the placeholder is not an id)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StreamsRendering:
    """ESPnet-style multi-stream rows of one example."""

    frames: list[list[int]]
    """[T][nq] layout ids: stream 0 text, units and markers; streams >= 1 codec ids on speech frames, pad elsewhere."""
    loss_mask: list[bool]
    """[T]: frames in the loss region."""
    segments: list[tuple[str, str, int, int]]
    """(field, modality, first frame, end frame) of each input and output segment, markers included."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _text_field(task, example: Mapping[str, Any], field: str) -> str:
    if field == TARGET_FIELD:
        return task.target_text(example.get("text"), example.get("labels") or {})
    value = example.get(field, (example.get("labels") or {}).get(field))
    if value is None or not str(value).strip():
        raise ValueError(f"task {task.name!r}: text field {field!r} missing or empty in example {example.get('id', '?')!r}")
    return str(value).strip()


def _speech_field(task, field: str, speech) -> Any:
    """The units (or [F, nq] streams) of one speech field: ``speech`` is one array for a task with one speech
    field, or a mapping field -> array."""
    if isinstance(speech, Mapping):
        if field not in speech:
            raise ValueError(f"task {task.name!r}: no units given for speech field {field!r} (given: {sorted(speech)})")
        return speech[field]
    n_speech = sum(m == SPEECH for _, m in task.inputs + task.outputs)
    if n_speech != 1:
        raise ValueError(f"task {task.name!r} has {n_speech} speech fields: pass a mapping field -> units")
    if speech is None:
        raise ValueError(f"task {task.name!r}: speech field {field!r} needs units")
    return speech


def _as_list(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _messages(system_prompt: str, user: str) -> list[dict[str, str]]:
    """The continuous model's convention (speechlm.model.speechlm.PromptFormatter): ``"default"`` leaves the
    template's own system turn, anything else (``""`` too) is written as the system turn."""
    messages = [{"role": "user", "content": user}]
    if system_prompt != "default":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _chat(tokenizer, task, instruction: str, slot: str, answer: str, system_prompt: str, loss_region: str,
          audio_token: str | None = None) -> ChatRendering:
    """Render the chat template around the user message and tokenize it in pieces (system, prompt before and
    after the audio placeholder, answer + end of turn), so the ids are what the continuous model builds too."""
    if loss_region not in LOSS_REGIONS:
        raise ValueError(f"unknown loss region {loss_region!r}; known: {', '.join(LOSS_REGIONS)}")
    user = task.template.format(audio=slot, instruction=instruction)
    full = tokenizer.apply_chat_template(_messages(system_prompt, user), tokenize=False, add_generation_prompt=True)
    head = ""
    if system_prompt != "default":
        head = tokenizer.apply_chat_template(_messages(system_prompt, user)[:1], tokenize=False)
        if not full.startswith(head):
            head = ""  # a template that folds the system text into the user turn: no separate prefix
    prompt = full[len(head):]

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids if text else []

    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    sys_ids, ans_ids = ids(head), ids(answer) + [eos]
    audio_at = None
    if audio_token is not None:
        if prompt.count(audio_token) != 1:
            raise ValueError(f"prompt must contain the audio placeholder {audio_token!r} exactly once: {user!r}")
        before, after = prompt.split(audio_token)
        prompt_ids = ids(before) + ids(after)
        audio_at = len(sys_ids) + len(ids(before))
    else:
        prompt_ids = ids(prompt)
    input_ids = sys_ids + prompt_ids + ans_ids
    start = {"answer": len(sys_ids) + len(prompt_ids), "turn": len(sys_ids), "all": 0}[loss_region]
    labels = [IGNORE] * start + input_ids[start:]
    return ChatRendering(head, prompt, answer, input_ids, labels, audio_at)


def _answer(task, example, render_speech) -> str:
    """The outputs in order; with more than one, each after its marker (SpeechGPT's chain of modality:
    transcript, then ``[ta]`` text answer, then ``[ua]`` unit answer)."""
    parts = []
    for field, modality in task.outputs:
        body = render_speech(field) if modality == SPEECH else _text_field(task, example, field)
        parts.append(body if len(task.outputs) == 1 else (UA if modality == SPEECH else TA) + body)
    return "\n".join(parts)


def _slot(task, example, render_speech) -> str:
    """What fills the template's ``{audio}`` slot: the inputs in order, one per line."""
    return "\n".join(render_speech(f) if m == SPEECH else _text_field(task, example, f) for f, m in task.inputs)


def render_continuous(task, example: Mapping[str, Any], tokenizer, instruction: str,
                      audio_token: str = "<|audio|>", system_prompt: str = "", loss_region: str = "answer") -> ChatRendering:
    """Today's path: the chat prompt with ``audio_token`` where the adapter's frames go (ids skip it; ``audio_at``
    says where they are spliced). Matches ``PromptFormatter.prompt_ids`` / ``target_ids`` of the continuous model."""
    if any(m == SPEECH for _, m in task.outputs):
        raise ValueError(f"task {task.name!r} answers in speech: the continuous model writes text only")
    if sum(m == SPEECH for _, m in task.inputs) != 1:
        raise ValueError(f"task {task.name!r}: the continuous model reads exactly one speech input")
    return _chat(tokenizer, task, instruction, _slot(task, example, lambda f: audio_token),
                 _answer(task, example, None), system_prompt, loss_region, audio_token=audio_token)


def render_units(task, example: Mapping[str, Any], units, tokenizer, instruction: str, system_prompt: str = "",
                 loss_region: str = "answer") -> ChatRendering:
    """SpeechGPT's form: the same chat template, each speech field written ``<|sosp|><|u12|>..<|eosp|>``.
    ``units``: the units of the one speech field, or a mapping field -> units. The tokenizer must hold the unit
    tokens (``speechlm.model.vocab.extend_llm``)."""
    def speech(field: str) -> str:
        return units_to_string(_as_list(_speech_field(task, field, units)))

    return _chat(tokenizer, task, instruction, _slot(task, example, speech), _answer(task, example, speech),
                 system_prompt, loss_region)


def render_streams(task, example: Mapping[str, Any], streams, layout, tokenizer, loss_region: str = "answer",
                   task_identifier: bool = True) -> StreamsRendering:
    """ESPnet's form: ``[<|sos_eos|>, <|task:NAME|>, segment..., <|sos_eos|>]`` (egs2/TEMPLATE/speechlm1/README.md,
    "Example Sequence"), one segment per input then per output. A text segment is ``<|sot|> text <|eot|>`` in
    stream 0; a speech segment ``<|sosp|> frames <|eosp|>`` with units in stream 0 and codec codes in streams >= 1.
    Streams >= 1 hold the pad outside speech (ESPnet's later code, ``build_mask``). ``streams``: the speech
    field's [F, nq] (units, codes...) or [F] units, or a mapping field -> that. ``layout``: a
    ``speechlm.model.vocab.VocabLayout``. Loss region ``answer``: the output segments and the final marker."""
    if loss_region not in LOSS_REGIONS:
        raise ValueError(f"unknown loss region {loss_region!r}; known: {', '.join(LOSS_REGIONS)}")
    nq, pad = layout.nq, layout.pad_id

    def row(tok: int) -> list[int]:
        return [tok] + [pad] * (nq - 1)

    frames: list[list[int]] = [row(layout.marker_id(SOS_EOS))]
    if task_identifier:
        frames.append(row(layout.task_id(task.name)))
    segments, target_from = [], None
    for i, (field, modality) in enumerate(task.inputs + task.outputs):
        if i == len(task.inputs):
            target_from = len(frames)
        start = len(frames)
        if modality == TEXT:
            ids = tokenizer(_text_field(task, example, field), add_special_tokens=False).input_ids
            frames += [row(layout.marker_id(SOT))] + [row(t) for t in ids] + [row(layout.marker_id(EOT))]
        else:
            data = _as_list(_speech_field(task, field, streams))
            frames.append(row(layout.marker_id(SOSP)))
            for f in data:
                f = _as_list(f) if not isinstance(f, int) else [f]
                if len(f) != nq:
                    raise ValueError(f"task {task.name!r}: speech field {field!r} has {len(f)} streams, the layout {nq}")
                frames.append([layout.unit_id(int(f[0]))] + [layout.codec_id(k - 1, int(f[k])) for k in range(1, nq)])
            frames.append(row(layout.marker_id(EOSP)))
        segments.append((field, modality, start, len(frames)))
    frames.append(row(layout.marker_id(SOS_EOS)))
    first = {"answer": target_from, "turn": 1, "all": 1}[loss_region]
    return StreamsRendering(frames, [t >= first for t in range(len(frames))], segments)

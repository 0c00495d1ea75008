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

import re

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

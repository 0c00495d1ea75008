"""One task record, three renderings (continuous chat prompt, units in the chat template, multi-stream rows),
checked against golden files; inputs/outputs on Task; SpeechGPT unit strings in and out.

Golden files live in tests/golden/; regenerate them (after a deliberate change) with
``SPEECHLM_UPDATE_GOLDEN=1 python -m pytest tests/test_task_render.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from speechlm.backbones.llm import build_tiny_tokenizer
from speechlm.model.vocab import VocabLayout, extend_llm
from speechlm.tasks import TASKS, Task, get_task, register
from speechlm.tasks.render import (
    EOSP, IGNORE, SOSP, from_speechgpt, parse_units, render_continuous, render_streams, render_units,
    speechgpt_to_units_string, to_speechgpt, units_string_to_speechgpt, units_to_string,
)

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = {"id": "clip-1", "audio": "clip-1.wav", "text": "hello world", "labels": {"answer": "ten"}}
UNITS = [12, 3, 7, 30, 3]
CODES = [[1, 4], [0, 2], [3, 3], [2, 0], [4, 1]]  # [F=5, 2 codec levels]


class _Emb:
    """Just enough of an LLM for extend_llm to grow: an embedding table and no head."""

    def __init__(self, rows: int):
        import torch

        self.emb = torch.nn.Embedding(rows, 8)
        self.config = type("C", (), {})()

    def get_input_embeddings(self):
        return self.emb

    def get_output_embeddings(self):
        return None

    def resize_token_embeddings(self, n, mean_resizing=False):
        import torch

        old = self.emb
        self.emb = torch.nn.Embedding(n, 8)
        with torch.no_grad():
            self.emb.weight[: old.weight.shape[0]] = old.weight


@pytest.fixture(autouse=True, scope="module")
def _forget_test_tasks():
    """Records registered here leave the registry afterwards, so other test files never see them."""
    before = set(TASKS)
    yield
    for name in set(TASKS) - before:
        del TASKS[name]


@pytest.fixture(scope="module")
def tok_layout():
    tok = build_tiny_tokenizer()
    layout = VocabLayout.for_llm(tok, 32, tasks=("asr", "test-tts"), codec_levels=2, codebook_size=5)
    extend_llm(_Emb(len(tok)), tok, layout)
    return tok, layout


def _golden(name: str, value) -> None:
    path = GOLDEN / f"{name}.json"
    lines = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items()]
    text = "{\n" + ",\n".join(lines) + "\n}\n"  # one field per line: a diff shows which part changed
    if os.environ.get("SPEECHLM_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with SPEECHLM_UPDATE_GOLDEN=1 once"
    assert json.loads(path.read_text()) == json.loads(text), f"{path.name} differs from the rendering"


def test_task_io_defaults_and_checks():
    asr = get_task("asr")
    assert asr.inputs == (("audio", "speech"),) and asr.outputs == (("target", "text"),)
    assert all(t.inputs and t.outputs for t in TASKS.values())
    tts = Task(name="test-tts-io", base="asr", template="{instruction}\n{audio}",
               inputs=(("text", "text"),), outputs=(("audio", "speech"),))
    child = register(Task(name="test-tts-io-child", base=register(tts).name))
    assert child.inputs == (("text", "text"),) and child.outputs == (("audio", "speech"),)  # inherited
    with pytest.raises(ValueError, match="text'|'speech"):
        register(Task(name="test-bad-io", base="asr", inputs=(("audio", "video"),)))


def test_three_renderings_of_one_record(tok_layout):
    tok, layout = tok_layout
    task, instruction = get_task("asr"), get_task("asr").instructions[0]
    cont = render_continuous(task, EXAMPLE, tok, instruction)
    units = render_units(task, EXAMPLE, UNITS, tok, instruction)
    streams = render_streams(task, EXAMPLE, [[u] + c for u, c in zip(UNITS, CODES)], layout, tok)
    # the same record: one answer, one instruction, the speech where {audio} is
    assert cont.answer == units.answer == "hello world"
    assert "<|audio|>" in cont.prompt and units_to_string(UNITS) in units.prompt
    assert cont.prompt.replace("<|audio|>", units_to_string(UNITS)) == units.prompt
    assert parse_units(units.prompt) == [UNITS]
    _golden("render_asr_continuous", cont.to_json())
    _golden("render_asr_units", units.to_json())
    _golden("render_asr_streams", streams.to_json())
    # loss regions: answer ids and end of turn only
    n_answer = len(tok("hello world", add_special_tokens=False).input_ids) + 1
    assert sum(x != IGNORE for x in units.labels) == n_answer
    assert units.labels[-1] == tok.convert_tokens_to_ids(tok.eos_token)
    assert sum(streams.loss_mask) == 1 + n_answer + 1 - 1 + 1  # <|sot|>, text ids, <|eot|>, final <|sos_eos|>
    assert [s[:2] for s in streams.segments] == [("audio", "speech"), ("target", "text")]


def test_continuous_rendering_matches_the_continuous_model(tok_layout):
    from speechlm.model.speechlm import PromptFormatter

    tok, _ = tok_layout
    task = get_task("ser")
    example = {"text": "kids are talking", "labels": {"emotion": "anger"}}
    r = render_continuous(task, example, tok, task.instructions[1])
    fmt = PromptFormatter(tok)
    p = fmt.prompt_ids(task.user_message(task.instructions[1], "<|audio|>"))
    target = fmt.target_ids(task.target_text(example["text"], example["labels"]))
    assert r.input_ids == p.before + p.after + target and r.audio_at == len(p.before)
    assert r.labels == [IGNORE] * (len(p.before) + len(p.after)) + target


def test_units_rendering_loss_regions_and_speech_answers(tok_layout):
    tok, layout = tok_layout
    tts = TASKS.get("test-tts") or register(Task(
        name="test-tts", base="asr", template="{instruction}\n{audio}", instructions=("Say this.",),
        eval_instructions=("Speak it.",), inputs=(("text", "text"),), outputs=(("audio", "speech"),)))
    r = render_units(tts, EXAMPLE, UNITS, tok, "Say this.")
    assert r.answer == units_to_string(UNITS) and "hello world" in r.prompt
    answer_ids = [layout.marker_id(SOSP)] + [layout.unit_id(u) for u in UNITS] + [layout.marker_id(EOSP)]
    assert r.input_ids[-len(answer_ids) - 1:-1] == answer_ids
    turn = render_units(tts, EXAMPLE, UNITS, tok, "Say this.", loss_region="turn")
    whole = render_units(tts, EXAMPLE, UNITS, tok, "Say this.", loss_region="all")
    assert whole.labels == whole.input_ids
    assert turn.labels[len(tok(turn.system, add_special_tokens=False).input_ids):] == \
        turn.input_ids[len(tok(turn.system, add_special_tokens=False).input_ids):]
    assert IGNORE in turn.labels and sum(x != IGNORE for x in r.labels) == len(answer_ids) + 1
    with pytest.raises(ValueError, match="writes text only"):
        render_continuous(tts, EXAMPLE, tok, "Say this.")
    s = render_streams(tts, EXAMPLE, [[u] + c for u, c in zip(UNITS, CODES)], layout, tok)
    _golden("render_tts_streams", s.to_json())
    assert s.frames[1][0] == layout.task_id("test-tts")
    speech = [f for f in s.frames if layout.unit_of(f[0]) is not None]
    assert [layout.unit_of(f[0]) for f in speech] == UNITS
    assert all(f[1] != layout.pad_id and f[2] != layout.pad_id for f in speech)
    assert all(f[1] == f[2] == layout.pad_id for f in s.frames if layout.unit_of(f[0]) is None)


def test_chain_of_modality_answer_order(tok_layout):
    tok, _ = tok_layout
    com = TASKS.get("test-com") or register(Task(
        name="test-com", base="sttc", outputs=(("text", "text"), ("target", "text"), ("answer_audio", "speech"))))
    r = render_units(com, EXAMPLE, {"audio": [1, 2], "answer_audio": [5, 6, 7]}, tok, com.instructions[0])
    assert r.answer == "<|ta|>hello world\n<|ta|>ten\n<|ua|>" + units_to_string([5, 6, 7])
    assert parse_units(r.prompt + r.answer) == [[1, 2], [5, 6, 7]]
    with pytest.raises(ValueError, match="mapping field"):
        render_units(com, EXAMPLE, [1, 2], tok, com.instructions[0])


def test_speechgpt_strings_round_trip():
    units = [661, 588, 604, 0, 12]
    s = to_speechgpt(units)
    assert s == "<sosp><661><588><604><0><12><eosp>"
    assert from_speechgpt(s) == units
    line = "[Human]: <sosp><1><2><eosp><eoh>. [SpeechGPT]: hi; [ua] <sosp><3><eosp><eoa>"
    ours = speechgpt_to_units_string(line)
    assert ours == "[Human]: <|sosp|><|u1|><|u2|><|eosp|><eoh>. [SpeechGPT]: hi; [ua] <|sosp|><|u3|><|eosp|><eoa>"
    assert units_string_to_speechgpt(ours) == line and parse_units(ours) == [[1, 2], [3]]
    with pytest.raises(ValueError):
        from_speechgpt("<sosp><1>x<eosp>")

"""Every shipped recipe parses; overrides and bad keys; task records and inheritance."""

from __future__ import annotations

import dataclasses

import pytest

from speechlm.config import ConfigError, RecipeConfig, from_dict, list_recipes, load_recipe, to_dict
from speechlm.tasks import TASKS, Task, get_task, register


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_parses_and_round_trips(name):
    cfg = load_recipe(name)
    assert isinstance(cfg, RecipeConfig) and cfg.name == name
    assert cfg.data.task in TASKS
    assert from_dict(to_dict(cfg)) == cfg
    if cfg.train.stages:  # a shipped stage table adds up and names registered tasks and parts
        from speechlm.tasks.mixture import parse_stages

        assert sum(s.steps for s in parse_stages(cfg.train.stages, cfg.train.max_steps)) == cfg.train.max_steps


def test_shipped_recipes_include_tiny_and_demo():
    assert {"tiny", "demo"} <= set(list_recipes())
    assert load_recipe("demo").model.llm == "smollm2-135m-instruct"
    assert load_recipe("tiny").model.llm.startswith("tiny-")


def test_overrides_are_typed():
    cfg = load_recipe("tiny", ["train.max_steps=3", "train.bf16=true", "model.lora_targets=q_proj,v_proj", "train.lr=5e-4"])
    assert cfg.train.max_steps == 3 and cfg.train.bf16 is True and cfg.train.lr == 5e-4
    assert cfg.model.lora_targets == ["q_proj", "v_proj"]


@pytest.mark.parametrize("override,needle", [
    ("train.nope=1", "unknown key 'nope'"),
    ("train.max_steps=many", "max_steps"),
    ("max_steps=3", "section.field=value"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_recipe("tiny", [override])


def test_unknown_recipe_lists_shipped_ones():
    with pytest.raises(ConfigError, match="tiny"):
        load_recipe("no-such-recipe")


def test_every_config_field_has_a_docstring():
    import ast
    import inspect

    import speechlm.config as mod

    tree = ast.parse(inspect.getsource(mod))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "ConfigError":
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), f"{node.name}.{stmt.target.id} lacks a docstring"


def test_asr_task_record():
    asr = get_task("asr")
    assert asr.metric == "wer" and asr.target == "text" and "{audio}" in asr.template
    assert len(asr.instructions) >= 5 and not set(asr.instructions) & set(asr.eval_instructions)
    assert asr.target_text("hello", {}) == "hello"
    with pytest.raises(ValueError, match="empty field 'text'"):
        asr.target_text("  ", {})


def test_task_inheritance_and_checks():
    child = register(Task(name="test-digits", base="asr", metric="accuracy", target="digit",
                          labels=tuple(str(i) for i in range(10))))
    try:
        assert child.instructions == get_task("asr").instructions and child.metric == "accuracy"
        assert child.target_text("", {"digit": 3}) == "3"
        with pytest.raises(ValueError, match="not in"):
            child.target_text("", {"digit": 12})
        with pytest.raises(KeyError, match="base 'nope'"):
            register(Task(name="x", base="nope"))
        with pytest.raises(ValueError, match="overlap"):
            register(dataclasses.replace(child, name="y", base=None, eval_instructions=child.instructions[:1]))
        with pytest.raises(KeyError, match="registered tasks"):
            get_task("no-such-task")
    finally:
        TASKS.pop("test-digits", None)


SAMPLE_LINE = {"text": "set an alarm for seven", "emotion": "anger", "gender": "female", "age_group": "adult",
               "style": "fast, high-pitched, loud", "rate_class": "fast", "pitch_class": "high", "loudness_class": "loud",
               "emotion_intensity": "strong", "event": "laugh", "answer": "Paris is the capital of France.",
               "intent": "set_alarm", "keywords": ["seven"], "digit": 7,
               "words": [{"w": "set", "start": 0.1, "end": 0.3}, {"w": "an", "start": 0.35, "end": 0.45}]}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_record_is_complete_and_formats_a_target(name):
    task = get_task(name)
    assert len(task.instructions) >= 5 and len(task.eval_instructions) >= 2, "5+ training and 2+ held-out paraphrases"
    assert not set(task.instructions) & set(task.eval_instructions)
    assert "{audio}" in task.template and task.description
    answer = task.target_text(SAMPLE_LINE["text"], SAMPLE_LINE)
    assert answer.strip()
    if task.labels is not None:
        assert task.parse_answer(answer) in task.labels
    if task.asr_prefix:
        assert answer.startswith(SAMPLE_LINE["text"])
    # the inference cap leaves room for the answer: at worst one token per character
    assert task.max_answer_tokens >= min(len(answer) + 1, 96)


def test_label_aliases_and_label_errors_name_the_field():
    assert get_task("ser").target_text("", {"emotion": "sadness"}) == "sad"
    with pytest.raises(ValueError, match="field 'gender'.*'robot'"):
        get_task("sgc").target_text("", {"gender": "robot"})
    with pytest.raises(ValueError, match="missing or empty field 'emotion'"):
        get_task("ser").target_text("x", {})


def test_every_task_metric_is_registered():
    from speechlm.evaluation.metrics import METRICS

    assert {t.metric for t in TASKS.values()} <= set(METRICS)

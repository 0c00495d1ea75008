"""The model card (README.md) of an exported folder: what the model is, what it was trained on, how it scored.

Read from the checkpoint and its run folder (``RUN/checkpoints/step-N`` -> ``RUN``): the resolved recipe
(config.json), ``meta.json`` (step, parameters), ``data_report.json`` (clips kept and dropped, the task mixture
of each stage) and evaluation summaries: ``speechlm eval`` writes ``{task: {metric: {system: value}}, "by_system":
{system: {subset: {...}}}}``, ``speechlm eval --tasks`` ``{task: {"metric", "n", "seen instructions", ...}}``;
``speechlm demo`` leaves the first in the run folder, the multi-task demo the second in ``RUN/eval``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechlm.config import RecipeConfig
from speechlm.utils import markdown_table

PER_TASK_SYSTEMS = ("seen instructions", "held-out instructions", "constrained", "single-task ASR", "majority",
                    "linear probe")
"""Columns of a per-task summary (speechlm.evaluation.per_task), in report order."""


def find_scores(ckpt: Path, given: list[str]) -> list[Path]:
    """The summary.json files to report: those given (files or eval folders), else the run folder's own and those
    one folder below it."""
    if given:
        out = []
        for g in given:
            p = Path(g)
            p = p / "summary.json" if p.is_dir() else p
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no evaluation summary (give an eval folder or its summary.json)")
            out.append(p)
        return out
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    if run is None:
        return []
    return [p for p in [run / "summary.json", *sorted(run.glob("*/summary.json"))] if p.is_file()]


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v)


def score_tables(path: Path) -> list[str]:
    """Markdown for one summary.json (both shapes ``speechlm eval`` writes); nothing for a shape it does not know."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if not isinstance(summary, dict):
        return []
    lines: list[str] = []
    per_task = {k: v for k, v in summary.items() if isinstance(v, dict) and "metric" in v}
    if per_task:
        cols = [s for s in PER_TASK_SYSTEMS if any(s in v for v in per_task.values())]
        rows = [[task, v["metric"], v.get("n", "-")] + [_fmt(v.get(s)) for s in cols] for task, v in per_task.items()]
        lines += [markdown_table(["task", "metric", "clips"] + cols, rows), ""]
    headline = {k: v for k, v in summary.items() if "by_system" in summary and k not in ("by_system", "real_time_factor")
                and isinstance(v, dict) and k not in per_task and all(isinstance(x, dict) for x in v.values())}
    for task, metrics in headline.items():
        for metric, systems in metrics.items():
            if not all(isinstance(x, (int, float)) for x in systems.values()):
                continue
            lines += [f"Task `{task}`, {metric.upper()} (all subsets):", "",
                      markdown_table(["system", metric], [[s, _fmt(float(x))] for s, x in systems.items()]), ""]
            by_system = summary.get("by_system") or {}
            subsets = list(dict.fromkeys(sub for s in by_system.values() for sub in s if sub != "all"))
            if subsets and len(subsets) > 1:
                rows = [[sub] + [_fmt(by_system[s].get(sub, {}).get(metric)) for s in systems] for sub in subsets]
                lines += [f"{metric.upper()} by subset:", "", markdown_table(["subset"] + list(systems), rows), ""]
    return lines


def _which_step(path: Path, ckpt: Path, run: Path | None) -> str:
    """Whether a summary in the run folder scores this checkpoint: `speechlm demo` names the one it scored in demo.json."""
    if run is None or not path.resolve().is_relative_to(run.resolve()):
        return ""
    demo = run / "demo.json"
    scored = json.loads(demo.read_text()).get("checkpoint") if demo.is_file() else None
    if scored and Path(scored).name == ckpt.name:
        return f" (the run's evaluation of this checkpoint, {ckpt.name})"
    return " (the run's evaluation; it may score another step than this export)"


def _data_lines(cfg: RecipeConfig, run: Path | None) -> list[str]:
    d = cfg.data
    source = d.train_shards or d.train_manifest or "(not recorded)"
    lines = [f"- training data: `{source}`" + (f" (validation: `{d.val_manifest}`)" if d.val_manifest else "")]
    report_path = run / "data_report.json" if run is not None else None
    if report_path is None or not report_path.is_file():
        return lines + ["- no data_report.json in the run folder: clip counts not recorded"]
    report = json.loads(report_path.read_text())
    lines.append(f"- clips: {report.get('good', '?')} used, {report.get('bad', 0)} skipped as bad (`{report_path.name}`)")
    stages = report.get("tasks")
    if isinstance(stages, dict):
        stages = [stages]
    for k, mix in enumerate(stages or []):
        examples = mix.get("examples") or mix.get("eligible") or {}
        probs = mix.get("probabilities") or {}
        parts = ", ".join(f"{t} {n} examples (p={probs.get(t, 0):.2f})" for t, n in examples.items())
        lines.append(f"- {'stage ' + str(k + 1) if len(stages) > 1 else 'task mixture'}: {parts}")
    return lines


def model_card(cfg: RecipeConfig, ckpt: Path, meta: dict, info: dict[str, Any], scores: list[Path]) -> str:
    """README.md of the exported folder."""
    from speechlm.tasks import TASKS

    m, t = cfg.model, cfg.train
    run: Path | None = info.get("run")
    tasks = info["tasks"]
    pipeline = "automatic-speech-recognition" if tasks == ["asr"] else "audio-text-to-text"
    a = info["adapter"]
    ctc = ("none" if not m.ctc_head else
           f"CTC head over the LLM's token embeddings ({info['ctc_vocab'] or 'all'} tokens)"
           + ("; the LLM reads CTC-compressed frames (blank frames dropped, runs merged)" if m.compress_audio else "")
           + ("; the LLM reads CTC-posterior-weighted token embeddings" if getattr(m, "posterior_input", False) else ""))
    lora = {"merged": f"LoRA r={m.lora_r}, alpha={m.lora_alpha} on {', '.join(m.lora_targets)}, merged into the weights",
            "kept": f"LoRA r={m.lora_r}, alpha={m.lora_alpha} on {', '.join(m.lora_targets)}, kept apart in `lora/` "
                    "(peft format; applied on load)",
            "none": "frozen (no LoRA)"}[info["lora"]]
    lines = [
        "---", "library_name: transformers", f"pipeline_tag: {pipeline}", "tags:", "- speechlm", "- speech-language-model",
        "- custom_code", "---", "",
        f"# speechlm `{cfg.name}` (step {meta.get('step', '?')})", "",
        "A speech language model trained with speechlm and exported by `speechlm export`: a frozen "
        "Whisper encoder run on each clip's real length, an adapter, and a decoder-only LLM that reads the audio frames "
        "inside its own chat template.", "",
        "## Architecture", "",
        f"- encoder: `{m.encoder}` (Whisper, {info['encoder_layers']} layers, width {info['encoder_width']}"
        + (", top layers trained" if m.train_encoder_layers else ", frozen") + ")",
        f"- adapter: `{a['type']}`, {a['k']} encoder frames per audio token, hidden {a['hidden']}"
        + (", RMSNorm output" if a.get("out_norm") else ""),
        f"- CTC: {ctc}",
        f"- LLM: `{m.llm}` ({info['llm_type']}, {info['llm_layers']} layers, width {info['llm_width']}, "
        f"vocabulary {info['vocab']}); {lora}",
        f"- {info['params'] / 1e6:.1f}M parameters in model.safetensors (fp32); clips up to {m.max_audio_seconds:g} s at 16 kHz",
        *([f"- trained with `{m.dtype}` backbones; exported in float32 (answers may differ slightly from speechlm's "
            f"{m.dtype} inference)"] if getattr(m, "dtype", "float32") != "float32" else []),
        f"- prompt: the LLM's chat template, system turn {m.system_prompt!r}, audio placeholder `{m.audio_token}` "
        f"(token id {info['audio_token_id']})", "",
        "## Tasks", "",
    ]
    rows = []
    for name in tasks:
        task = TASKS.get(name)
        rows.append([name, task.description if task else "", task.metric if task else "",
                     task.instructions[0] if task else ""])
    lines += [markdown_table(["task", "what", "metric", "instruction (default)"], rows), "",
              f"`transcribe()` runs `{info['default_task']}` unless given `task=`; any task in `config.tasks` or a free "
              "`instruction=` can be asked, though only the tasks above were trained.", "",
              "## Training", ""]
    lines += _data_lines(cfg, run)
    stages = ", ".join(f"{s.get('steps')} steps of {'+'.join(map(str, s.get('tasks') or []))}" for s in t.stages)
    lines += [f"- {meta.get('step', '?')} optimizer steps of {t.max_steps} planned, peak lr {t.lr:g}, seed {t.seed}"
              + (f"; stages: {stages}" if stages else ""),
              f"- source checkpoint: `{ckpt.resolve()}`", "", "## Scores", ""]
    found = False
    for path in scores:
        tables = score_tables(path)
        if tables:
            found = True
            lines += [f"From `{path}`{_which_step(path, ckpt, run)}:", "", *tables]
    if not found:
        lines += ["No evaluation summary was found (run `speechlm eval --checkpoint ... --manifest ...`, then export "
                  "again, or pass `--scores EVAL_DIR`).", ""]
    lines += [
        "## Use", "",
        "```python",
        "import soundfile as sf",
        "from transformers import AutoModel",
        "",
        'model = AutoModel.from_pretrained("PATH/TO/THIS/FOLDER", trust_remote_code=True).eval()',
        'wave, sr = sf.read("clip.wav", dtype="float32")  # 16 kHz mono',
        "print(model.transcribe([wave]))",
        f'print(model.transcribe([wave], task="{tasks[-1]}"))' if tasks[-1] != info["default_task"] else
        'print(model.transcribe([wave], instruction="Write down exactly what is said in this recording."))',
        "```", "",
        "Greedy decoding gives the answers `speechlm transcribe` gives from the source checkpoint (same clips, same "
        "batching). Not included: splitting clips longer than the maximum at pauses and the voice-activity check "
        "that answers silence with \"\" (speechlm does both before the model).", "",
    ]
    return "\n".join(lines)

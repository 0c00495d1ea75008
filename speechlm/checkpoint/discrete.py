"""Discrete speech LM checkpoints: build the model a recipe describes, save it, load it back with its layout checked.

Owns :func:`build_discrete_model` (LLM + vocabulary extension + LoRA and trainable new rows, or full fine-tuning),
:func:`save_discrete_checkpoint`, :func:`load_discrete_checkpoint` (-> :class:`DiscreteBundle`) and
:func:`is_discrete_checkpoint`. Training, inference and evaluation all read a discrete checkpoint through here.

Layout of ``RUN/checkpoints/step-NNNNNN/`` (atomic, ``RUN/checkpoints/latest`` names the newest; the file names
are those of :mod:`speechlm.checkpoint.folder`, so :func:`~speechlm.checkpoint.folder.resolve_checkpoint` works)::

    trainable.safetensors   LoRA, the new rows (peft trainable tokens), codec tables; every LLM weight with full_finetune
    vocab_layout.json       the frozen vocabulary layout (speechlm.model.vocab), compared field by field on load
    config.json             the resolved recipe the model is rebuilt from
    meta.json               step, parameter counts, wall time
    speech_tokens/          the tokenizer folder (tokenizer.json + .safetensors, vocoder/), without its units/
    state.safetensors/json  optimizer, scheduler, RNG, stage and data position (speechlm.checkpoint.state)
    sharded/                sharded runs only: parameters and optimizer tensors by rank (torch.distributed.checkpoint;
                            see speechlm.checkpoint.folder)

A checkpoint folder alone is enough: the LLM comes from the registry named in config.json, the speech tokenizer
and the vocoder from ``speech_tokens/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechlm.checkpoint.folder import (WEIGHTS, check_layout, checkpoint_path, is_sharded_checkpoint, point_latest,
                                       resolve_checkpoint)
from speechlm.checkpoint.state import load_state, save_state
from speechlm.config import RecipeConfig, from_dict, to_dict
from speechlm.model.discrete import DiscreteSpeechLM
from speechlm.model.vocab import LAYOUT_FILE, VocabLayout, extend_llm, init_unit_rows, trainable_rows_config
from speechlm.utils import atomic_dir, write_json

SPEECH_TOKENS = "speech_tokens"
"""Sub-folder of a checkpoint holding the tokenizer folder (and its vocoder)."""
RENDERINGS = ("units", "streams")


@dataclass
class DiscreteBundle:
    """Everything a discrete checkpoint folder holds, loaded."""

    model: DiscreteSpeechLM
    text_tokenizer: Any
    """The LLM tokenizer, extended by the layout's tokens."""
    speech_tokenizer: Any
    """speechlm.tokenizers: waves -> units (and streams)."""
    vocoder: Any
    """speechlm.vocoders.UnitVocoder, or None when the tokenizer folder had none (no speech out)."""
    cfg: RecipeConfig
    folder: Path


def stage_rows(cfg: RecipeConfig) -> list[dict]:
    """The stage table; without one, a single stage of ``data.task`` over every step."""
    return list(cfg.discrete.stages) or [{"steps": cfg.train.max_steps, "tasks": [cfg.data.task]}]


def layout_tasks(cfg: RecipeConfig) -> tuple[str, ...]:
    """Task names that get a task marker: every task of the stage table, sorted (weights stripped)."""
    names = set()
    for row in stage_rows(cfg):
        tasks = row.get("tasks", [])
        for spec in [tasks] if isinstance(tasks, str) else tasks:
            names.add(str(spec).partition(":")[0].strip())
    return tuple(sorted(names))


def speech_sizes(tokenizer, rendering: str) -> tuple[int, int, int]:
    """(K units, codec levels Q, codebook size C) a rendering takes from a speech tokenizer's layout."""
    lay = tokenizer.layout
    if lay["kind"] in ("mel-rvq", "hf-codec"):
        raise ValueError(f"a {lay['kind']} tokenizer has no semantic units; the discrete LM needs kmeans, vq or codec_ssl")
    if rendering == "streams" and lay["streams"] > 1:
        sizes = lay["stream_sizes"][1:]
        if len(set(sizes)) != 1:
            raise ValueError(f"codec streams of different sizes {sizes} are not supported")
        return tokenizer.k, len(sizes), sizes[0]
    return tokenizer.k, 0, 0


def parse_loss_weights(specs: list[str]) -> dict[str, float]:
    """["unit:0.5", "codec:0.0625"] -> {"unit": 0.5, "codec": 0.0625}."""
    out = {}
    for spec in specs:
        name, sep, w = str(spec).partition(":")
        if not sep:
            raise ValueError(f"discrete.loss_weights: expected modality:weight, got {spec!r}")
        out[name.strip()] = float(w)
    return out


def build_discrete_model(cfg: RecipeConfig, tokenizer, seed: int | None = None) -> tuple[DiscreteSpeechLM, Any]:
    """The recipe's LLM with the layout's tokens appended, LoRA + trainable new rows (or fully trainable), wrapped
    in :class:`DiscreteSpeechLM`. Deterministic given ``seed`` (default ``train.seed``)."""
    from speechlm.backbones.llm import load_llm

    d = cfg.discrete
    if d.rendering not in RENDERINGS:
        raise ValueError(f"discrete.rendering: expected one of {', '.join(RENDERINGS)}, got {d.rendering!r}")
    seed = cfg.train.seed if seed is None else seed
    llm, text_tok = load_llm(d.llm)
    n_units, levels, size = speech_sizes(tokenizer, d.rendering)
    layout = VocabLayout.for_llm(text_tok, n_units, tasks=layout_tasks(cfg), codec_levels=levels, codebook_size=size,
                                 tokenizer_hash=tokenizer.hash)
    extend_llm(llm, text_tok, layout, seed=seed)
    if d.unit_init in ("centroids", "ctc"):  # ctc: refined from here by the trainer (speechlm.model.unit_align)
        tensors = tokenizer.tensors() if hasattr(tokenizer, "tensors") else {}
        table = tensors.get("semantic.centroids", tensors.get("centroids"))  # codec_ssl: its unit part
        if table is None or table.dim() != 2 or table.shape[0] != layout.n_units:
            raise ValueError(f"discrete.unit_init={d.unit_init}: the {getattr(tokenizer, 'kind', '?')} tokenizer has no "
                             "unit centroids (k-means tokenizers do)")
        init_unit_rows(llm, layout, table, seed=seed)
    elif d.unit_init != "mean":
        raise ValueError(f"discrete.unit_init: expected mean, centroids or ctc, got {d.unit_init!r}")
    torch.manual_seed(seed)  # LoRA's initialisation draws from the global generator
    if d.full_finetune:
        llm.requires_grad_(True)
    else:
        import warnings

        from peft import get_peft_model

        if d.lora_r <= 0:
            raise ValueError("discrete.lora_r must be > 0 (or set discrete.full_finetune=true)")
        with warnings.catch_warnings():  # peft warns about tied embeddings: the rows train once, for both ends
            warnings.simplefilter("ignore")
            llm = get_peft_model(llm, trainable_rows_config(layout, r=d.lora_r, alpha=d.lora_alpha, dropout=d.lora_dropout,
                                                            targets=tuple(d.lora_targets)))
    pattern = d.pattern or None
    model = DiscreteSpeechLM(llm, layout, pattern=pattern, weights=parse_loss_weights(d.loss_weights), seed=seed)
    return model, text_tok


def _copy_speech_tokens(src: Path, dst: Path) -> None:
    """The tokenizer folder without its tokenized manifests (units/): what turns speech into units and back."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("units", "*.jsonl"))


def write_discrete_checkpoint(folder: Path, model: DiscreteSpeechLM, cfg: RecipeConfig, step: int, state: dict | None,
                              tokenizer_dir: str | Path, weights: dict | None = None) -> None:
    """The files above into ``folder`` (a temporary one). ``weights``: the trainable weights when the caller gathered
    them (a sharded model), else the model's own."""
    from safetensors.torch import save_file

    weights = model.trainable_state_dict() if weights is None else weights
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))
    model.layout.save(folder)
    write_json(folder / "config.json", to_dict(cfg))
    write_json(folder / "meta.json", {"step": step, "kind": "discrete", "time": time.time(),
                                      "params": {"total": n_all, "trainable": n_train}})
    if state is not None:
        save_state(folder, state)
    _copy_speech_tokens(Path(tokenizer_dir), folder / SPEECH_TOKENS)


def save_discrete_checkpoint(model: DiscreteSpeechLM, cfg: RecipeConfig, out_dir: str | Path, step: int,
                             state: dict | None, tokenizer_dir: str | Path) -> Path:
    """Write ``OUT/checkpoints/step-NNNNNN`` atomically (files above), then point ``latest`` at it."""
    path = checkpoint_path(out_dir, step)
    with atomic_dir(path) as tmp:
        write_discrete_checkpoint(tmp, model, cfg, step, state, tokenizer_dir)
    point_latest(out_dir, path)
    return path


def is_discrete_checkpoint(path: str | Path) -> bool:
    """True for a discrete checkpoint folder (or a run folder whose latest checkpoint is one)."""
    try:
        return (resolve_checkpoint(path) / LAYOUT_FILE).exists()
    except FileNotFoundError:
        return False


def _load_speech_tokens(folder: Path) -> tuple[Any, Any]:
    from speechlm.tokenizers.registry import load_tokenizer
    from speechlm.vocoders.train import load_vocoder

    tok = load_tokenizer(folder)
    voc = load_vocoder(folder / "vocoder", tokenizer_hash=tok.hash, k=tok.k) if (folder / "vocoder").exists() else None
    return tok, voc


def load_discrete_checkpoint(path: str | Path, device: str = "cpu") -> DiscreteBundle:
    """Rebuild the model from the checkpoint's config and its own speech tokenizer, check the saved vocabulary
    layout against the rebuilt one (:class:`~speechlm.model.vocab.LayoutMismatch` names every differing field),
    load the trained weights. Eval mode."""
    from safetensors.torch import load_file

    ckpt = check_layout(resolve_checkpoint(path))
    saved = VocabLayout.load(ckpt)
    cfg = from_dict(json.loads((ckpt / "config.json").read_text()))
    tokenizer, vocoder = _load_speech_tokens(ckpt / SPEECH_TOKENS)
    model, text_tok = build_discrete_model(cfg, tokenizer)
    model.load_trainable_state_dict(load_file(str(ckpt / WEIGHTS)), layout=saved, where=str(ckpt))
    return DiscreteBundle(model.to(device).eval(), text_tok, tokenizer, vocoder, cfg, ckpt)


def load_discrete_training_state(path: str | Path) -> tuple[dict | None, dict, VocabLayout, Path]:
    """(trainable weights, training state, saved layout, folder) to resume from; the weights are None for a sharded
    checkpoint (resumed from its ``sharded/`` folder)."""
    from safetensors.torch import load_file

    ckpt = check_layout(resolve_checkpoint(path), for_resume=True)
    weights = None if is_sharded_checkpoint(ckpt) else load_file(str(ckpt / WEIGHTS))
    return weights, load_state(ckpt), VocabLayout.load(ckpt), ckpt

"""Checkpoint folders: save, resolve, check the layout, load. Shared by training, inference, evaluation and the
server, so none of them imports another to read a checkpoint.

Layout of ``RUN/checkpoints/step-NNNNNN/`` (written atomically: a temp folder, then a rename;
``RUN/checkpoints/latest`` names the newest)::

    trainable.safetensors   the trained weights (adapter, LoRA, any unfrozen encoder layers)
    config.json             the resolved recipe: the model is rebuilt from it
    meta.json               step, parameter counts, wall time
    tokenizer/              the LLM tokenizer as trained (added tokens included)
    state.safetensors       optimizer, scheduler, RNG and sampler state: tensors ...
    state.json              ... and the structure around them (speechlm.checkpoint.state; no pickle)

A checkpoint folder alone is enough to rebuild the model: backbones come from the registry or cache named
in config.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from speechlm.checkpoint.state import STATE_JSON, STATE_TENSORS, load_state, save_state
from speechlm.config import RecipeConfig, from_dict, to_dict
from speechlm.utils import atomic_dir, atomic_open, write_json

if TYPE_CHECKING:
    from speechlm.model.speechlm import SpeechLM

CKPT_DIR = "checkpoints"
WEIGHTS = "trainable.safetensors"
REQUIRED = (WEIGHTS, "config.json", "meta.json")
"""Files every checkpoint has; :func:`check_layout` names the first one missing."""
TRAINING_STATE = (STATE_TENSORS, STATE_JSON)
"""Files a checkpoint needs to resume training (not to run inference)."""


class CheckpointError(FileNotFoundError):
    """A folder that is not a (complete) checkpoint; the message names the folder and the missing file."""


def check_layout(ckpt: str | os.PathLike, for_resume: bool = False) -> Path:
    """Raise :class:`CheckpointError` naming the first missing file; returns the folder."""
    ckpt = Path(ckpt)
    need = REQUIRED + (TRAINING_STATE if for_resume else ())
    for name in need:
        if not (ckpt / name).exists():
            raise CheckpointError(f"{ckpt}: not a complete checkpoint: {name} is missing")
    return ckpt


def save_checkpoint(model: SpeechLM, cfg: RecipeConfig, out_dir: Path, step: int, state: dict) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically, then point ``checkpoints/latest`` at it."""
    from safetensors.torch import save_file

    root = Path(out_dir) / CKPT_DIR
    path = root / f"step-{step:06d}"
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, str(tmp / WEIGHTS))
        save_state(tmp, state)
        write_json(tmp / "config.json", to_dict(cfg))
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        write_json(tmp / "meta.json", {"step": step, "params": model.num_params(), "time": time.time()})
    with atomic_open(root / "latest", "w") as f:
        f.write(path.name + "\n")
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder / checkpoints folder (then its latest checkpoint)."""
    p = Path(path)
    for candidate in (p, p / CKPT_DIR):
        if (candidate / WEIGHTS).exists():
            return candidate
        if (candidate / "latest").exists():
            return candidate / (candidate / "latest").read_text().strip()
    raise CheckpointError(f"no checkpoint in {p} (expected {WEIGHTS} or {CKPT_DIR}/latest)")


def read_config(path: str | os.PathLike) -> tuple[RecipeConfig, Path]:
    """The resolved recipe a checkpoint was trained with, without building the model."""
    ckpt = check_layout(resolve_checkpoint(path))
    return from_dict(json.loads((ckpt / "config.json").read_text())), ckpt


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[SpeechLM, RecipeConfig, Path]:
    """Rebuild the model from the checkpoint's own config and load its trained weights."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from speechlm.model.builders import build_speechlm
    from speechlm.model.speechlm import PromptFormatter

    cfg, ckpt = read_config(path)
    model = build_speechlm(cfg.model, seed=cfg.train.seed)
    model.load_trainable_state_dict(load_file(str(ckpt / WEIGHTS)))
    if (ckpt / "tokenizer").exists():
        model.tokenizer = AutoTokenizer.from_pretrained(ckpt / "tokenizer")
        model.formatter = PromptFormatter(model.tokenizer, model.audio_token, cfg.model.system_prompt)
    return model.to(device).eval(), cfg, ckpt


def load_training_state(path: str | os.PathLike) -> tuple[dict, dict, Path]:
    """(trainable weights, training state, folder) for resuming; refuses a pickled (pre-0.2) state."""
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    check_layout(ckpt, for_resume=not (ckpt / "state.pt").exists())  # a legacy state.pt gets load_state's message
    return load_file(str(ckpt / WEIGHTS)), load_state(ckpt), ckpt

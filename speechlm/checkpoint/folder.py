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
    sharded/                sharded runs only (train.strategy=fsdp): the trainable parameters and the optimizer's
                            tensors, one safetensors file per rank, written by torch.distributed.checkpoint
                            (speechlm.training.distributed); state.json then holds the optimizer's hyper-parameters

A checkpoint folder alone is enough to rebuild the model: backbones come from the registry or cache named
in config.json (a sharded run writes trainable.safetensors whole as well).

Sharded runs have several writers: every rank writes into ``checkpoints/.step-NNNNNN.staging``
(:func:`prepare_staging`), then rank 0 renames it (:func:`publish_checkpoint`), as :func:`save_checkpoint` does
with its own temporary folder. ``latest`` only ever names a complete folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from speechlm.checkpoint.state import STATE_JSON, STATE_TENSORS, load_state, save_state
from speechlm.config import RecipeConfig, from_dict, to_dict
from speechlm.utils import atomic_dir, atomic_open, replace_dir, write_json

if TYPE_CHECKING:
    from speechlm.model.speechlm import SpeechLM

CKPT_DIR = "checkpoints"
WEIGHTS = "trainable.safetensors"
SHARDED_DIR = "sharded"
"""Sub-folder of a sharded run's checkpoint written by torch.distributed.checkpoint."""
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


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CKPT_DIR / f"step-{step:06d}"


def write_checkpoint(folder: Path, model: SpeechLM, cfg: RecipeConfig, step: int, state: dict,
                     weights: dict | None = None) -> None:
    """The files of a checkpoint into ``folder`` (a temporary one: see :func:`save_checkpoint`). ``weights``: the
    trainable weights when the caller gathered them (a sharded model), else the model's own."""
    from safetensors.torch import save_file

    weights = model.trainable_state_dict() if weights is None else weights
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))
    save_state(folder, state)
    write_json(folder / "config.json", to_dict(cfg))
    model.tokenizer.save_pretrained(folder / "tokenizer")
    write_json(folder / "meta.json", {"step": step, "params": model.num_params(), "time": time.time()})


def point_latest(out_dir: str | os.PathLike, path: Path) -> None:
    with atomic_open(Path(out_dir) / CKPT_DIR / "latest", "w") as f:
        f.write(path.name + "\n")


def save_checkpoint(model: SpeechLM, cfg: RecipeConfig, out_dir: Path, step: int, state: dict) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically, then point ``checkpoints/latest`` at it."""
    path = checkpoint_path(out_dir, step)
    with atomic_dir(path) as tmp:
        write_checkpoint(tmp, model, cfg, step, state)
    point_latest(out_dir, path)
    return path


def prepare_staging(out_dir: str | os.PathLike, step: int, create: bool = True) -> Path:
    """The staging folder every rank of a sharded run writes step ``step`` into: a name derived from the step, so the
    ranks agree without talking. ``create`` (rank 0, before the others start): clear what a crashed attempt left."""
    path = Path(out_dir) / CKPT_DIR / f".step-{step:06d}.staging"
    if create:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    return path


def publish_checkpoint(staging: Path, out_dir: str | os.PathLike, step: int) -> Path:
    """Rename a completely written staging folder to ``step-NNNNNN`` (replacing one of that name), then point
    ``latest`` at it: until the rename nothing names the folder, after it the folder is whole."""
    path = checkpoint_path(out_dir, step)
    replace_dir(staging, path)
    point_latest(out_dir, path)
    return path


def is_sharded_checkpoint(ckpt: str | os.PathLike) -> bool:
    """True for a checkpoint of a sharded run (its training state is in ``sharded/``)."""
    return (Path(ckpt) / SHARDED_DIR).is_dir()


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


def load_training_state(path: str | os.PathLike) -> tuple[dict | None, dict, Path]:
    """(trainable weights, training state, folder) for resuming; refuses a pickled (pre-0.2) state. A sharded
    checkpoint gives None for the weights: they are resumed from ``sharded/`` (load_weights reads single keys)."""
    ckpt = resolve_checkpoint(path)
    check_layout(ckpt, for_resume=not (ckpt / "state.pt").exists())  # a legacy state.pt gets load_state's message
    state = load_state(ckpt)
    return (None if is_sharded_checkpoint(ckpt) else load_weights(ckpt)), state, ckpt


def load_weights(ckpt: str | os.PathLike, keys: list[str] | None = None) -> dict:
    """The checkpoint's trainable weights, or only ``keys`` (those present)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if keys is None:
        return load_file(str(Path(ckpt) / WEIGHTS))
    with safe_open(str(Path(ckpt) / WEIGHTS), framework="pt") as f:
        return {k: f.get_tensor(k) for k in keys if k in f.keys()}

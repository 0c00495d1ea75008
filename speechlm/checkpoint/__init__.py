"""Checkpoints: one module for checkpoint I/O (save, resolve, layout check, load), used by training,
inference, evaluation and serving alike; training state is stored without pickle (safetensors + JSON).

* :mod:`~speechlm.checkpoint.folder` - the folder layout, :func:`save_checkpoint`, :func:`resolve_checkpoint`,
  :func:`check_layout`, :func:`load_checkpoint`, :func:`load_training_state`; for sharded runs (several writers)
  the staging folder and its publication (the DCP shards themselves: speechlm.training.distributed).
* :mod:`~speechlm.checkpoint.state` - a tree of dicts, lists, tuples, numbers and tensors as
  ``state.safetensors`` + ``state.json``.

May import: utils, config, data, tasks, backbones, model. Nothing above them.
"""

from speechlm.checkpoint.folder import (
    CKPT_DIR,
    SHARDED_DIR,
    CheckpointError,
    check_layout,
    is_sharded_checkpoint,
    load_checkpoint,
    load_training_state,
    load_weights,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
)
from speechlm.checkpoint.state import StateError, load_state, save_state

__all__ = ["CKPT_DIR", "SHARDED_DIR", "CheckpointError", "StateError", "check_layout", "is_sharded_checkpoint",
           "load_checkpoint", "load_state", "load_training_state", "load_weights", "read_config", "resolve_checkpoint",
           "save_checkpoint", "save_state"]

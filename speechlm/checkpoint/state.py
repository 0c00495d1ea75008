"""Training state without pickle: a tree of dicts, lists, tuples, numbers, strings, tensors and numpy arrays,
written as one safetensors file (the tensors) plus one JSON file (the structure).

Why: ``torch.save``/``torch.load(weights_only=False)`` of an optimizer or RNG state is a pickle, and loading a
checkpoint someone else made could then run their code. safetensors holds only tensor bytes and JSON only
data, so loading a state can do nothing but build values.

JSON cannot say everything Python can, so a few values are tagged (every tag is a one-key object):

* ``{"__tensor__": KEY}``  a torch tensor stored under KEY in the safetensors file (dtype and shape kept);
* ``{"__ndarray__": KEY, "dtype": D}``  a numpy array (stored as a tensor, restored to dtype D);
* ``{"__tuple__": [...]}``  a tuple (RNG states and optimizer ``betas`` must come back as tuples);
* ``{"__dict__": [[k, v], ...]}``  a dict with any non-string key (the optimizer's ``state`` is keyed by int);
* ``{"__float__": "nan" | "inf" | "-inf"}``  non-finite floats (strict JSON has none).

Anything else (a function, an object) is refused with the path of the offending value, so a state that would
not round-trip fails at save time, never at resume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechlm.utils import atomic_open

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
FORMAT = "speechlm-state/1"


class StateError(ValueError):
    """A state that cannot be written or read back (names the file and the path inside the tree)."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share storage (optimizer states can)
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        arr = obj if obj.dtype != np.uint32 else obj.astype(np.int64)  # torch has limited uint32 support
        tensors[key] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors, f"{path}<key>"), _encode(v, tensors, f"{path}[{k!r}]")] for k, v in obj.items()]}
    raise StateError(f"state{path}: cannot store a {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1 and "__tensor__" in obj:
        return _tensor(tensors, obj["__tensor__"], path)
    if set(obj) == {"__ndarray__", "dtype"}:
        return _tensor(tensors, obj["__ndarray__"], path).numpy().astype(np.dtype(obj["dtype"]))
    if len(obj) == 1 and "__tuple__" in obj:
        return tuple(_decode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj["__tuple__"]))
    if len(obj) == 1 and "__dict__" in obj:
        return {_decode(k, tensors, path): _decode(v, tensors, f"{path}[{k!r}]") for k, v in obj["__dict__"]}
    if len(obj) == 1 and "__float__" in obj:
        return float(obj["__float__"])
    return {k: _decode(v, tensors, f"{path}.{k}") for k, v in obj.items()}


def _tensor(tensors: dict[str, torch.Tensor], key: str, path: str) -> torch.Tensor:
    if key not in tensors:
        raise StateError(f"state{path}: tensor {key!r} missing from {STATE_TENSORS}")
    return tensors[key]


def save_state(folder: str | os.PathLike, state: dict) -> None:
    """Write ``state`` as ``folder/state.safetensors`` + ``folder/state.json`` (each file atomically)."""
    from safetensors.torch import save

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "")
    with atomic_open(folder / STATE_TENSORS, "wb") as f:
        f.write(save(tensors, metadata={"format": FORMAT}))
    with atomic_open(folder / STATE_JSON, "w") as f:
        json.dump({"format": FORMAT, "state": tree}, f)


def load_state(folder: str | os.PathLike) -> dict:
    """Read what :func:`save_state` wrote; no pickle is involved."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / STATE_JSON
    if not meta_path.exists():
        if (folder / "state.pt").exists():
            raise StateError(f"{folder}: this checkpoint keeps its training state in a pickle (state.pt), which "
                             "speechlm no longer loads (it could run code); its weights still load for inference, "
                             "but resuming needs a checkpoint with state.json + state.safetensors")
        raise StateError(f"{meta_path}: training state not found")
    try:
        doc = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise StateError(f"{meta_path}: not valid JSON ({e})") from None
    if doc.get("format") != FORMAT:
        raise StateError(f"{meta_path}: field 'format': expected {FORMAT!r}, got {doc.get('format')!r}")
    tensors = load_file(str(folder / STATE_TENSORS))
    return _decode(doc["state"], tensors, "")

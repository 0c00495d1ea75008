"""Multi-process training, shared by both trainers (speechlm.training.loop and speechlm.training.discrete): the
process group, the wrapping chosen by ``train.strategy`` (DDP, or FSDP2 sharding), the per-layer options
(activation checkpointing, ``torch.compile``), and the checkpoints of sharded runs.

Strategies (both run as a plain process and unchanged under ``torchrun``; gloo on CPU, NCCL on GPUs):

* ``ddp``: every rank holds the whole model; one process needs no process group at all.
* ``fsdp``: PyTorch's own FSDP2 (``torch.distributed.fsdp.fully_shard``). Each LLM decoder layer is one FSDP unit,
  then the root takes the rest (encoder, adapter, embeddings, head): the per-block-then-root order of torchtitan
  (torchtitan/models/llama3/infra/parallelize.py, ``apply_fsdp``). Parameters, gradients and optimizer state are
  split across ranks; a layer is all-gathered just for its forward and backward. With ``train.bf16`` the decoder
  layers (most of the LLM) are gathered as bf16 and their gradients reduced in fp32 (``MixedPrecisionPolicy``);
  the sharded masters, and so the optimizer, stay fp32. The root stays fp32 under autocast: it reads fp32
  waveforms, and LayerNorm refuses an fp32 input with bf16 weights. One process still needs a process group and a device mesh: it gets a one-rank group on an
  in-memory store. FSDP2, like DDP, averages gradients over ranks, so the loop's ``* world`` factor in the loss
  holds for both. FSDP2 cannot shard a 0-dim parameter (the CTC head's ``log_scale``): such parameters stay whole
  on every rank (``ignored_params``), :func:`sync_replicated_grads` averages their gradients as FSDP does the
  rest, and :func:`clip_grad_norm_` clips shards and whole parameters by one global norm.

Checkpoints of a sharded run: ``sharded/`` inside the normal checkpoint folder holds the trainable parameters and
the optimizer's tensors, written by ``torch.distributed.checkpoint`` (DCP), every rank its own shard, as
safetensors files (DCP's ``HuggingFaceStorageWriter``/``Reader``): no pickle is written or loaded, since the reader
rebuilds DCP's metadata from the safetensors headers where ``FileSystemReader`` would ``pickle.load`` a
``.metadata`` file. DCP reshards on load, so a run saved with N processes resumes with M. The rest of the folder
(``trainable.safetensors`` gathered whole, config, tokenizer, ``state.json`` with scheduler, RNG, step, sampler
and the optimizer's hyper-parameters) is written by rank 0 as for any run, so the folder alone serves inference.

Atomicity with several writers: every rank writes into one staging folder named from the step
(``checkpoints/.step-NNNNNN.staging``, so no name has to be exchanged); only after DCP's closing collective (every
shard is written) and rank 0's own files does rank 0 rename it to ``step-NNNNNN`` and then point ``latest`` at it.
A crash at any point leaves a dot-folder that ``latest`` never names (the next save of that step clears it).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from speechlm.backbones.unwrap import decoder_of
from speechlm.checkpoint.folder import CheckpointError, SHARDED_DIR, prepare_staging, publish_checkpoint

STRATEGIES = ("ddp", "fsdp")


# ---------------------------------------------------------------------------------------------------
# process group
# ---------------------------------------------------------------------------------------------------
def setup_distributed(device_pref: str, strategy: str = "ddp") -> tuple[int, int, torch.device]:
    """(rank, world size, device). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"train.strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized() and (world > 1 or strategy == "fsdp"):
        backend = "nccl" if use_cuda else "gloo"
        if "MASTER_ADDR" in os.environ:  # torchrun (any world size)
            dist.init_process_group(backend)
        else:  # FSDP2 alone in a plain process: a one-rank group on an in-memory store
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return rank, world, device


def cleanup() -> None:
    """Wait for every rank, then end the process group (if there is one).

    Callers drop their DDP wrapper first (``net = None``): a DDP Reducer freed *after* the group is destroyed
    holds the group's last reference, and frees it on the main thread with the GIL held, while Gloo's worker
    thread needs the GIL to free its last barrier's tensors; the join then waits forever (seen as a 1-in-4 hang of
    a two-rank run at exit; pytorch/pytorch#56297). The collection below frees wrappers caught in cycles while
    the group is still registered, so the group itself goes in ``destroy_process_group``."""
    gc.collect()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce when there is more than one rank; a no-op otherwise."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------------------------------------
# wrapping
# ---------------------------------------------------------------------------------------------------
def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's decoder layers (Llama / Qwen2 ``model.layers``), peft-wrapped or not."""
    return list(decoder_of(llm).layers)


def _checkpoint_forward(layer: nn.Module) -> None:
    """Recompute ``layer``'s activations in backward instead of keeping them (torch.utils.checkpoint, non-reentrant,
    RNG state preserved so dropout draws the same mask). The forward is checkpointed in place rather than wrapped in
    ``checkpoint_wrapper``, so parameter names (checkpoints, stage tables, optimizer state) do not change, and module
    hooks stay outside the checkpoint: FSDP2's pre-backward hook all-gathers the parameters before the recompute.

    A transformers layer (``GradientCheckpointingLayer``) is switched to its own checkpointing, which also drops
    the KV cache the decoder passes in training: a recompute would append the same keys to it a second time."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # transformers before 4.52: every layer is checkpointed below
        GradientCheckpointingLayer = ()
    if isinstance(layer, GradientCheckpointingLayer):
        layer.gradient_checkpointing = True
        layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
        return
    forward = layer.forward

    def checkpointed(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    layer.forward = checkpointed


def prepare_layers(layers: list[nn.Module], activation_checkpointing: bool = False, compile: bool = False,
                   compile_backend: str = "inductor") -> None:
    """Per-layer options, in torchtitan's order (activation checkpointing, then compile, then FSDP): ``compile``
    compiles each layer in place (``nn.Module.compile``; names unchanged), one graph per layer type."""
    for layer in layers:
        if activation_checkpointing:
            _checkpoint_forward(layer)
        if compile:
            layer.compile(backend=compile_backend)


def shard(model: nn.Module, layers: list[nn.Module], device: torch.device, bf16: bool) -> nn.Module:
    """FSDP2 in place: each of ``layers`` one unit, then the root; 0-dim parameters stay whole (module doc).
    Returns ``model`` (its class is now an FSDP subclass; call it as before)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    scalars = {p for p in model.parameters() if p.dim() == 0}
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, ignored_params=scalars)
    # The root (fp32, module doc) reads batches of waveforms and ids: nothing is cast wholesale.
    fully_shard(model, mesh=mesh, mp_policy=MixedPrecisionPolicy(cast_forward_inputs=False), ignored_params=scalars)
    return model


def replicated(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters among ``params`` that FSDP left whole on every rank (not DTensor shards)."""
    from torch.distributed.tensor import DTensor

    return [p for p in params if not isinstance(p, DTensor)]


def sync_replicated_grads(params: list[nn.Parameter]) -> None:
    """Average the gradients of whole parameters of a sharded model over ranks, as FSDP averages its shards'
    (every rank has a gradient for the same parameters: the forward takes the same path on every rank)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, also for FSDP shards mixed with whole parameters: the shards' norm is
    completed across ranks (``full_tensor``, as torchtitan's clip_grad_norm_ does), combined with the others',
    and each kind is scaled by the one global coefficient."""
    from torch.distributed.tensor import DTensor

    with_grad = [p for p in params if p.grad is not None]
    shards = [p for p in with_grad if isinstance(p.grad, DTensor)]
    if not shards:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    whole = [p for p in with_grad if not isinstance(p.grad, DTensor)]
    norms = [torch.nn.utils.get_total_norm([p.grad for p in shards]).full_tensor()]
    if whole:
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in whole]).to(norms[0].device))
    total = torch.linalg.vector_norm(torch.stack(norms))
    for group in (shards, whole):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def wrap(model: nn.Module, layers: list[nn.Module], strategy: str, world: int, device: torch.device,
         bf16: bool = False) -> nn.Module:
    """The module the training step calls: ``model`` sharded in place (fsdp), a DDP wrapper (ddp, world > 1) or
    ``model`` itself. DDP registers the parameters that need gradients when it wraps: call again (ddp) when a
    stage changes them; FSDP is applied once."""
    if strategy == "fsdp":
        return shard(model, layers, device, bf16)
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# ---------------------------------------------------------------------------------------------------
# sharded checkpoints
# ---------------------------------------------------------------------------------------------------
def full_tensors(state: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Every rank calls (each DTensor shard is all-gathered, one tensor at a time, in the dict's order, which is
    the same on every rank); rank 0 gets whole CPU tensors, the others an empty dict."""
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in state.items():
        full = v.full_tensor() if isinstance(v, DTensor) else v
        if rank == 0:
            out[k] = full.detach().to("cpu", copy=True).contiguous()
    return out


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, names: set[str]) -> tuple[dict, dict]:
    """Model and optimizer state keyed by parameter name (DTensor shards under FSDP, plain tensors otherwise; no
    copies), the model's restricted to ``names``: frozen backbones are rebuilt from the registry, not stored."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    return {k: v for k, v in msd.items() if k in names}, osd


def _flatten(msd: dict, osd: dict) -> dict[str, torch.Tensor]:
    """The tensors DCP stores: ``model.<name>`` and ``optim.<name>.<key>`` (AdamW: step, exp_avg, exp_avg_sq)."""
    flat = {f"model.{k}": v for k, v in msd.items()}
    for fqn, st in osd["state"].items():
        for key, v in st.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"optimizer state {fqn}.{key} is a {type(v).__name__}; a sharded checkpoint holds tensors only")
            flat[f"optim.{fqn}.{key}"] = v
    return flat


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, names: set[str]) -> list[dict]:
    """Every rank: write its shard of the parameters in ``names`` and of the optimizer state into ``folder``.
    Returns the optimizer's param_groups (hyper-parameters and parameter names: plain data, for state.json)."""
    import torch.distributed.checkpoint as dcp

    msd, osd = _state_dicts(model, optimizer, names)
    dcp.save(_flatten(msd, osd), storage_writer=dcp.HuggingFaceStorageWriter(str(folder), save_distributed=True))
    return osd["param_groups"]


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, names: set[str],
                 param_groups: list[dict]) -> None:
    """Every rank: read what :func:`save_sharded` wrote, resharded to this run's ranks (or whole, for a model that
    is not sharded), into the parameters and the optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # get_state_dict gives a fresh optimizer a zero state for every parameter (a step at lr 0: nothing moves)
    msd, osd = _state_dicts(model, optimizer, names)
    saved = set(dcp.HuggingFaceStorageReader(str(folder)).read_metadata().state_dict_metadata)
    missing = sorted(k for k in msd if f"model.{k}" not in saved)
    if missing:
        raise CheckpointError(f"{folder}: the sharded checkpoint does not fit the model: missing {missing[:5]}")
    # A parameter that had not stepped when the run was saved (frozen by an earlier stage) has no optimizer state;
    # the zero state must not stand in for it (AdamW's step count would start at 1 instead of 0).
    osd["state"] = {fqn: st for fqn, st in osd["state"].items() if all(f"optim.{fqn}.{k}" in saved for k in st)}
    dcp.load(_flatten(msd, osd), storage_reader=dcp.HuggingFaceStorageReader(str(folder)))
    osd["param_groups"] = param_groups
    set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd, options=StateDictOptions(strict=False))


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, order: list[str], state: dict) -> None:
    """The optimizer state of a checkpoint that is not sharded (``Optimizer.state_dict()``: keyed by position in
    ``order``, the names of the optimizer's parameters) into the optimizer of a sharded model: re-keyed by name,
    then split across ranks by set_state_dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    osd = {"state": {order[i]: st for i, st in state["state"].items()},
           "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict={}, optim_state_dict=osd,
                   options=StateDictOptions(full_state_dict=True, strict=False))


def save_sharded_checkpoint(out_dir: Path, step: int, rank: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                            names: set[str], write_rest: Callable[[Path, dict[str, torch.Tensor], list[dict]], None]) -> Path | None:
    """Every rank calls. DCP shards into the staging folder, the trainable weights gathered whole, then rank 0's
    ``write_rest(folder, weights, param_groups)`` adds the other files and the folder is published (module doc).
    Returns the checkpoint folder on rank 0, None elsewhere."""
    staging = prepare_staging(out_dir, step) if rank == 0 else None
    barrier()
    if staging is None:
        staging = prepare_staging(out_dir, step, create=False)
    groups = save_sharded(staging / SHARDED_DIR, model, optimizer, names)  # ends with a collective: all shards written
    weights = full_tensors(model.trainable_state_dict(), rank)
    path = None
    if rank == 0:
        write_rest(staging, weights, groups)
        path = publish_checkpoint(staging, out_dir, step)
    barrier()
    return path

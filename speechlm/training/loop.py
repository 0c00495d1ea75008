"""The training loop: setup / train / save / cleanup, in one readable function.

Runs as a plain process on a CPU and unchanged under ``torchrun --nproc_per_node N`` (``train.strategy``: DDP,
or FSDP2 sharding; gloo on CPU, NCCL on GPUs; speechlm.training.distributed). Every rank iterates the same global
batch plan and takes its own shard of each batch (``DurationBatchSampler``); the loss is the summed cross-entropy
divided by the answer-token count of the whole global batch (all-reduced), so N processes compute exactly the
gradient of one process with the same global batch.

Checkpoints (``OUT/checkpoints/step-NNNNNN``, written atomically by :mod:`speechlm.checkpoint`,
``OUT/checkpoints/latest`` names the newest) hold the trainable weights, optimizer, scheduler, RNG states,
sampler position, resolved config and the tokenizer, with no pickle: ``resume`` continues as if the run had
never stopped. A sharded run's checkpoint resumes with any number of processes.

The hot loop never waits for the device: losses and token counts are summed on the device and read (``.item()``
/ ``.tolist()``) only at log steps; the time-limit flag is all-reduced each step only when a limit is set.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from speechlm.checkpoint import CKPT_DIR, SHARDED_DIR, load_training_state, load_weights, save_checkpoint
from speechlm.checkpoint.folder import write_checkpoint
from speechlm.config import RecipeConfig, to_dict
from speechlm.data.manifest import Cut, ManifestError, validate
from speechlm.data.sampler import DurationBatchSampler
from speechlm.model.builders import build_speechlm
from speechlm.model.label_frames import LabelFramesAdapter
from speechlm.model.speechlm import Batch, SpeechLM
from speechlm.tasks import get_task
from speechlm.training.dataset import SpeechDataset, collate
from speechlm.training.distributed import (all_reduce_, cleanup, clip_grad_norm_, decoder_layers, load_full_optimizer,
                                           load_sharded, prepare_layers, replicated, save_sharded_checkpoint,
                                           setup_distributed, sync_replicated_grads, wrap)
from speechlm.utils import write_json

# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def lr_lambda(warmup: int, total: int, floor: float = 0.1, stage_steps: list[int] | None = None):
    """Linear warm-up, then cosine decay to ``floor`` x peak at ``total`` steps. With ``stage_steps`` (the stage
    table's step counts), each stage gets its own warm-up and cosine: a new loss or newly trained part starts at
    the peak rate instead of the tail of the previous stage's decay."""
    def one(step: int, length: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, length - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def f(step: int) -> float:
        if not stage_steps:
            return one(step, total)
        start = 0
        for n in stage_steps:
            if step < start + n:
                return one(step - start, n)
            start += n
        return one(step - (start - stage_steps[-1]), stage_steps[-1])
    return f


def param_groups(params: list[torch.nn.Parameter], model: SpeechLM, train_cfg) -> list:
    """AdamW's parameter groups: one, or with ``train.encoder_lr`` the trained encoder layers apart at that rate."""
    if not train_cfg.encoder_lr:
        return params
    enc = {id(p) for p in model.encoder.parameters()}
    groups = [{"params": [p for p in params if id(p) not in enc]},
              {"params": [p for p in params if id(p) in enc], "lr": train_cfg.encoder_lr}]
    return [g for g in groups if g["params"]]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_cuts(manifest: str, required: tuple[str, ...], max_duration: float, skip_bad: bool) -> tuple[list[Cut], dict]:
    """Read and check a manifest up front: bad lines fail now (or are counted with skip_bad), not mid-epoch."""
    if not manifest:
        raise ManifestError("no training manifest: set data.train_manifest or pass --train-manifest")
    if not Path(manifest).exists():
        raise ManifestError(f"{manifest}: manifest not found")
    report = validate(manifest, required_fields=required, max_duration=max_duration, skip_bad=skip_bad)
    if not report.good:
        raise ManifestError(f"{manifest}: no usable cuts ({report.summary()})")
    return list(report.good), {"good": report.n_good, "bad": report.n_bad, "problems": report.bad[:20]}


def collate_share(items: list[dict]) -> Batch | None:
    """collate, or None for an empty share of a global batch (an elastic resume; speechlm.data.sampler)."""
    return collate(items) if items else None


def move(batch: Batch, device: torch.device) -> Batch:
    if device.type != "cpu":
        batch.waves = [w.to(device, non_blocking=True) for w in batch.waves]
        if batch.frames is not None:
            batch.frames = [f.to(device, non_blocking=True) for f in batch.frames]
    return batch


def audio_seconds(batch: Batch) -> float:
    if batch.frames is not None:
        return sum(f.shape[0] for f in batch.frames) / 50  # Whisper encoder frames: 50 per second
    return sum(w.numel() for w in batch.waves) / 16000


@torch.no_grad()
def validation_loss(model: SpeechLM, cuts: list[Cut], cfg: RecipeConfig, device: torch.device) -> float:
    return validation_metrics(model, cuts, cfg, device, diagnostics=False)["loss"]


@torch.no_grad()
def validation_metrics(model: SpeechLM, cuts: list[Cut], cfg: RecipeConfig, device: torch.device,
                       diagnostics: bool = True) -> dict[str, float]:
    """LM loss on the validation cuts, and with ``diagnostics``:

    * ``loss_shuffled`` / ``audio_reliance``: the same loss when every clip gets the next clip's audio, and how
      much higher it is. Near 0, the LLM's prior answers, not the audio.
    * ``ctc_wer``: WER of the greedy CTC transcript (no LLM involved), with a CTC head; lower-cased, punctuation
      dropped on both sides (the report's WER uses Whisper's normalizer).
    """
    task = get_task(cfg.data.task)
    ds = SpeechDataset(cuts, task, model.formatter, seed=cfg.train.seed, ctc_targets=model.ctc is not None,
                       label_targets=model.label_head is not None)
    items = [ds[i] for i in range(len(ds))]
    sampler = DurationBatchSampler([c.duration for c in cuts], cfg.data.max_seconds_per_batch, cfg.data.max_batch, shuffle=False)
    batches = [list(idx) for idx in sampler]
    was_training = model.training
    model.eval()

    def loss_of(items_: list[dict]) -> float:
        total, count = 0.0, 0
        for idx in batches:
            loss, n = model(move(collate([items_[i] for i in idx]), device))
            total, count = total + float(loss), count + int(n)
        return total / max(1, count)

    out = {"loss": loss_of(items)}
    if diagnostics and len(items) > 1:
        audio_key = "frames" if "frames" in items[0] else "wave"
        shifted = [{**it, audio_key: items[(i + 1) % len(items)][audio_key]} for i, it in enumerate(items)]
        out["loss_shuffled"] = loss_of(shifted)
        out["audio_reliance"] = out["loss_shuffled"] - out["loss"]
    if diagnostics and model.ctc is not None:
        import jiwer

        refs, hyps = [], []
        for idx in batches:
            batch = move(collate([items[i] for i in idx]), device)
            for i, hyp in zip(idx, model.ctc_transcribe(batch.waves, batch.frames)):
                if cuts[i].text and _plain(cuts[i].text):
                    refs.append(_plain(cuts[i].text))
                    hyps.append(_plain(hyp))
        if refs:
            out["ctc_wer"] = float(jiwer.wer(refs, hyps))
    if diagnostics and model.label_head is not None:  # what the label head alone hears, no LLM: share right
        pairs = right = 0
        for idx in batches:
            batch = move(collate([items[i] for i in idx]), device)
            audio, lengths = model.adapt(batch.waves, batch.frames)
            _, n, r = model.label_head(audio, lengths, batch.label_targets)
            pairs, right = pairs + n, right + r
        if pairs:
            out["label_acc"] = right / pairs
    model.train(was_training)
    return out


@torch.no_grad()
def fit_label_probes(model: SpeechLM, cuts: list[Cut], task, seed: int, device: torch.device,
                     skip_bad: bool = False, n: int = 4000) -> dict[str, int]:
    """Fit the label probes (speechlm.model.label_frames) before the first step, as the linear probe is fitted: L-BFGS
    on the mean-pooled encoder frames of up to ``n`` training clips (one pass of the encoder). The clips are drawn by
    seed from the whole list, not a rank's shard, so every rank fits the same probes. Returns clips per field."""
    from speechlm.model.labels import clip_label_targets
    from speechlm.tasks import TASKS

    pick = sorted(random.Random(seed).sample(range(len(cuts)), min(n, len(cuts))))
    ds = SpeechDataset([cuts[i] for i in pick], task, model.formatter, seed=seed, with_targets=False, skip_bad=skip_bad)
    label_tasks = [t for t in TASKS.values() if t.labels is not None]
    pooled, targets, batch_items = [], [], []
    was_training = model.training
    model.eval()
    for k, i in enumerate(pick):
        item = ds[k]
        if item is not None:  # skip_bad: an unreadable clip is left out
            batch_items.append(item)
            targets.append(clip_label_targets(cuts[i].labels, label_tasks, model.formatter.ctc_ids))
        if batch_items and (len(batch_items) == 16 or k == len(pick) - 1):
            batch = move(collate(batch_items), device)
            model.adapt(batch.waves, batch.frames)
            pooled.append(model.adapter.last_pooled)  # [b, D]
            batch_items = []
    model.train(was_training)
    return model.adapter.fit_probes(torch.cat(pooled).cpu(), targets)  # [N, D]


def _plain(text: str) -> str:
    """Lower case, letters, digits and apostrophes only: enough to compare CTC transcripts in the training log."""
    return " ".join("".join(ch if ch.isalnum() or ch == "'" else " " for ch in text.lower()).split())


# ---------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------
def train(cfg: RecipeConfig, resume: str | None = None, progress: bool = True) -> Path:
    """Train ``cfg``; returns the final checkpoint folder. ``resume``: a checkpoint or run folder, or ``auto``."""
    # ---- setup ------------------------------------------------------------------------------------
    if cfg.train.loss_norm not in ("token", "example"):
        raise ValueError(f"train.loss_norm: expected token or example, got {cfg.train.loss_norm!r}")
    rank, world, device = setup_distributed(cfg.train.device, cfg.train.strategy)
    fsdp = cfg.train.strategy == "fsdp"
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out_dir = Path(cfg.train.out_dir)
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    task = get_task(cfg.data.task)
    required = ("text",) if task.target == "text" else (task.target,)
    corpus = None
    stages = []
    if cfg.train.stages:
        from speechlm.tasks.mixture import parse_stages, set_trainable, stage_at

        if cfg.data.train_shards:
            raise ValueError("train.stages: a curriculum needs data.train_manifest (stages are not supported with shards)")
        stages = parse_stages(cfg.train.stages, cfg.train.max_steps)

    def loss_weights(k: int) -> tuple[float, float, float]:
        """(LM weight, CTC weight, label weight) of stage ``k`` (or of the whole run without a stage table)."""
        if not stages:
            return 1.0, cfg.train.ctc_weight, cfg.train.label_weight
        return (stages[k].lm, cfg.train.ctc_weight if stages[k].ctc is None else stages[k].ctc,
                cfg.train.label_weight if stages[k].label is None else stages[k].label)

    if any(loss_weights(k)[1] > 0 for k in range(max(1, len(stages)))) and not cfg.model.ctc_head:
        raise ValueError("a CTC weight above 0 (train.ctc_weight or a stage's ctc) needs model.ctc_head=true")
    if any(loss_weights(k)[2] > 0 for k in range(max(1, len(stages)))) and not (cfg.model.label_head or cfg.model.label_frames):
        raise ValueError("a label weight above 0 (train.label_weight or a stage's label) needs model.label_head=true "
                         "or model.label_frames")
    if cfg.data.train_shards:  # streaming tar shards: checked when written (speechlm prepare --shards)
        from speechlm.data.shards import ShardDataset, ShardedCuts, iter_shards

        corpus = ShardedCuts(cfg.data.train_shards)
        cuts, data_report = [], {"good": len(corpus.ids), "bad": len(corpus.skipped), "problems": corpus.skipped[:20]}
        n_clips, hours = len(corpus.ids), corpus.total_seconds / 3600
    else:
        multi = bool(cfg.data.tasks or stages)
        cuts, data_report = load_cuts(cfg.data.train_manifest, () if multi else required, cfg.model.max_audio_seconds, cfg.data.skip_bad)
        n_clips, hours = len(cuts), sum(c.duration for c in cuts) / 3600
    # Examples of each stage: (cut, task) pairs by weight and temperature (speechlm.tasks.mixture); every stage is
    # built now, so an invalid label or a task no line serves fails before training starts.
    stage_data: list[tuple[list[Cut], list | None]] = [(cuts, None)]
    if corpus is None and multi:
        from speechlm.tasks.mixture import build_mixture, parse_task_weights

        rows = [s.tasks for s in stages] if stages else [cfg.data.tasks]
        built = [build_mixture(cuts, parse_task_weights(list(t)), cfg.data.temperature, seed=cfg.train.seed + k)
                 for k, t in enumerate(rows)]
        stage_data = [(ex_cuts, ex_tasks) for ex_cuts, ex_tasks, _ in built]
        data_report["tasks"] = [report for _, _, report in built] if stages else built[0][2]
    val_required = () if cfg.data.tasks or stages else required  # validation loss is on the main task only
    val_cuts = load_cuts(cfg.data.val_manifest, val_required, cfg.model.max_audio_seconds, cfg.data.skip_bad)[0] if cfg.data.val_manifest else []
    if val_required == () and val_cuts:
        from speechlm.tasks.mixture import eligible

        val_cuts = [val_cuts[i] for i in eligible(val_cuts, task)]

    model = build_speechlm(cfg.model, seed=cfg.train.seed).to(device)
    model.train()
    if cfg.model.ctc_vocab not in ("train", "all"):
        raise ValueError(f"model.ctc_vocab: expected train or all, got {cfg.model.ctc_vocab!r}")
    if model.ctc is not None and cfg.model.ctc_vocab == "train" and cuts:
        # the head scores only tokens some training transcript holds (speechlm.model.ctc: same signal, less compute)
        targets = [model.formatter.ctc_ids(c.text) for c in cuts if c.text and c.text.strip()]
        if cfg.model.ctc_vocab_size > 0:  # the N most frequent pieces; the rest spelled with them (speechlm.model.ctc)
            from speechlm.model.ctc import frequent_vocab

            model.ctc.set_vocab(frequent_vocab(targets, cfg.model.ctc_vocab_size, model.tokenizer))
        else:
            model.ctc.set_vocab({t for ids in targets for t in ids})
    if cuts and "features" in cuts[0].labels:
        if not cfg.data.use_features:
            for c in cuts:
                c.labels.pop("features", None)
        else:
            from speechlm.model.features import verify_features

            # refuses another encoder's features, or frames cut at another depth than the trained top layers
            verify_features(cfg.data.train_manifest, model.encoder, below_top=cfg.model.train_encoder_layers)
    if cuts and not resume and isinstance(model.adapter, LabelFramesAdapter):
        fitted = fit_label_probes(model, cuts, task, cfg.train.seed, device, skip_bad=cfg.data.skip_bad)
        if rank == 0:
            print(f"[speechlm] label probes fitted on the training clips: {fitted}", flush=True)
    if cfg.data.frame_mask and not (cuts and "features" in cuts[0].labels):
        raise ValueError("data.frame_mask masks cached encoder frames: the training manifest needs them "
                         "(speechlm prepare --features) and data.use_features=true")

    def make_data(k: int) -> tuple[SpeechDataset, DurationBatchSampler | None]:
        """Dataset and sampler of stage ``k`` (the only stage without a curriculum)."""
        ex_cuts, ex_tasks = stage_data[k]
        ds = SpeechDataset(ex_cuts, task, model.formatter, seed=cfg.train.seed, skip_bad=cfg.data.skip_bad, tasks=ex_tasks,
                           ctc_targets=model.ctc is not None, frame_mask=cfg.data.frame_mask,
                           label_targets=model.label_head is not None)
        if corpus is not None:
            return ds, None
        return ds, DurationBatchSampler([c.duration for c in ex_cuts], cfg.data.max_seconds_per_batch, cfg.data.max_batch,
                                        shuffle=True, seed=cfg.train.seed + k, rank=rank, world_size=world)

    stage_idx, step, consumed = 0, 0, 0
    weights = state = ckpt = None
    if resume:
        weights, state, ckpt = load_training_state(out_dir if resume == "auto" else resume)
        if weights is not None:  # parameters into the whole model, before any wrapping
            model.load_trainable_state_dict(weights)
        elif model.ctc is not None:  # sharded: parameters come from sharded/ below, the CTC vocabulary from here
            vocab = load_weights(ckpt, ["ctc.vocab"])
            if vocab:
                model.ctc.set_vocab(vocab["ctc.vocab"].tolist())
        if stages:
            stage_idx = state.get("stage", 0)
    dataset, sampler = make_data(stage_idx)
    shard_ds = dummy = None
    if corpus is not None:
        shard_ds = ShardDataset(corpus, rank=rank, world_size=world, num_workers=cfg.data.num_workers, seed=cfg.train.seed,
                                shuffle_buffer=cfg.data.shuffle_buffer, max_seconds=cfg.data.max_seconds_per_batch,
                                max_batch=cfg.data.max_batch, transform=dataset.from_shard_item)
        # Ranks may get different batch counts from whole shards; a rank that runs out steps with this
        # batch at weight 0 (stand_in), so every rank makes the same collective calls and no cut is dropped.
        dummy = collate([dataset.from_shard_item(next(iter_shards(corpus, shuffle=False)))])

    def epoch_now() -> int:
        return sampler.epoch if sampler is not None else shard_ds.epoch

    def micro_batches():
        """(batch, weight, shard unit) for the rest of this epoch."""
        if sampler is not None:
            dataset.epoch = sampler.epoch
            loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_share, num_workers=cfg.data.num_workers,
                                pin_memory=device.type == "cuda")
            for batch in loader:
                yield (batch, 1.0, None) if batch is not None else (stand_in(), 0.0, None)
            return
        stream = iter(shard_ds.loader())
        for _ in range(max(shard_ds.remaining_per_rank())):
            unit = next(stream, None)
            yield (collate(unit.items), 1.0, unit) if unit is not None else (stand_in(), 0.0, None)

    def stand_in() -> Batch:
        """What a rank with nothing to do this micro-batch runs at weight 0, so that every rank makes the same
        collective calls: a rank past the end of its shards, or with an empty share after an elastic resume."""
        nonlocal dummy
        if dummy is None:
            dummy = collate([dataset[0]])
        return dummy

    layers = decoder_layers(model.llm)
    prepare_layers(layers, cfg.train.activation_checkpointing, cfg.train.compile, cfg.train.compile_backend)
    active: set[str] = set(model.trainable_names)

    def set_stage_trainable(k: int) -> None:
        """The stage's parts learn; the CTC head's blank and scale learn whenever its loss is on (DDP must not
        see a parameter that needs a gradient but gets none).

        FSDP: every part any stage trains keeps requires_grad, and a stage's frozen parts lose their gradients
        before the step (``active``; AdamW skips a parameter without a gradient, as if frozen). FSDP2 fixes each
        unit's gradient dtypes at its first forward from the parameters that need gradients then
        (torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py, ``_init_mp_dtypes``), so a unit frozen then
        would reduce a later stage's gradients in the wrong dtype under bf16."""
        nonlocal active
        ctc_on, label_on = loss_weights(k)[1] > 0, loss_weights(k)[2] > 0
        if stages:
            set_trainable(model, model.trainable_names,
                          stages[k].trainable + (("ctc",) if ctc_on else ()) + (("labels",) if label_on else ()))
        else:
            if model.ctc is not None:
                model.ctc.requires_grad_(ctc_on)
            if model.label_head is not None:
                model.label_head.requires_grad_(label_on)
        active = {n for n, p in model.named_parameters() if p.requires_grad}
        if fsdp:
            for n, p in model.named_parameters():
                p.requires_grad_(n in model.trainable_names)

    set_stage_trainable(stage_idx)
    net = wrap(model, layers, cfg.train.strategy, world, device, cfg.train.bf16)
    if fsdp:
        from torch.distributed.fsdp import register_fsdp_forward_method

        register_fsdp_forward_method(model, "ctc_transcribe")  # validation calls it outside forward
    # after wrapping: FSDP replaces the parameters by their shards
    named = [(n, p) for n, p in model.named_parameters() if n in model.trainable_names]
    params = [p for _, p in named]
    whole = replicated(params) if fsdp else []  # parameters FSDP could not shard (0-dim)
    optimizer = torch.optim.AdamW(param_groups(params, model, cfg.train), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        cfg.train.warmup_steps, cfg.train.max_steps, stage_steps=[st.steps for st in stages] if cfg.train.stage_schedule else None))
    if resume:
        if weights is None:
            load_sharded(ckpt / SHARDED_DIR, model, optimizer, model.trainable_names, state["optimizer"]["param_groups"])
        elif fsdp:
            load_full_optimizer(model, optimizer, [n for n, _ in named], state["optimizer"])
        else:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if sampler is not None:
            sampler.load_state_dict(state["sampler"])
            consumed = state["sampler"]["position"]
        else:
            shard_ds.load_state_dict(state["shards"])
        set_rng_state(state["rng"])
        step = state["step"]
        if rank == 0:
            print(f"[speechlm] resumed from {ckpt} at step {step}", flush=True)

    log_path = out_dir / "train_log.jsonl"
    writer = bar = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", to_dict(cfg))
        write_json(out_dir / "data_report.json", data_report)
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        writer = SummaryWriter(str(out_dir / "tensorboard"))
        bar = tqdm(total=cfg.train.max_steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
        n = model.num_params()
        print(f"[speechlm] {n_clips} training clips ({hours:.2f} h{', streamed from shards' if corpus else ''}), "
              f"{n['trainable'] / 1e6:.2f}M trainable of {n['total'] / 1e6:.1f}M params, device {device}, world {world}", flush=True)

    def checkpoint() -> Path | None:
        """Called on every rank (the shard-position gather is collective, and so is a sharded save); rank 0
        writes the files, every rank its shard of a sharded run."""
        data_state = {"sampler": sampler.state_dict(consumed=consumed)} if sampler is not None else {"shards": shard_ds.gather_state_dict()}
        state = {"scheduler": scheduler.state_dict(), "step": step, "rng": rng_state(), "stage": stage_idx, **data_state}
        if fsdp:
            def write_rest(folder: Path, full: dict, groups: list[dict]) -> None:
                write_checkpoint(folder, model, cfg, step, {**state, "optimizer": {"param_groups": groups}}, weights=full)

            return save_sharded_checkpoint(out_dir, step, rank, model, optimizer, model.trainable_names, write_rest)
        if rank != 0:
            return None
        return save_checkpoint(model, cfg, out_dir, step, {**state, "optimizer": optimizer.state_dict()})

    def validate() -> None:
        """Validation metrics, logged by rank 0. A sharded model needs every rank for its forward passes."""
        if not (rank == 0 or fsdp):
            return
        with dtype_ctx() if (fsdp and dtype_ctx) else torch.autocast(device.type, enabled=False):
            rec = validation_metrics(model, val_cuts, cfg, device)
        if fsdp:
            model.reshard()  # the root keeps its gathered parameters after a forward without backward
        if rank == 0:
            _log_val(rec, step, log_path, writer)

    # ---- train ------------------------------------------------------------------------------------
    t_start = time.time()
    # summed on the device, read at log steps: LM loss, answer tokens, CTC loss, CTC tokens (this rank's)
    # (the label loss, its (clip, label) pairs and the pairs the head gets right follow)
    sums = torch.zeros(7, dtype=torch.float64, device=device)
    window = {"samples": 0, "audio_s": 0.0, "t0": time.time()}
    dtype_ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.train.bf16 else None
    stop = False
    while step < cfg.train.max_steps and not stop:
        if stages and stage_at(stages, step) != stage_idx:  # next curriculum stage: its data, its trainable parts
            stage_idx = stage_at(stages, step)
            dataset, sampler = make_data(stage_idx)
            consumed = 0
            set_stage_trainable(stage_idx)
            if not fsdp:  # DDP registers the parameters that need gradients when it wraps
                net = wrap(model, layers, cfg.train.strategy, world, device)
            if rank == 0:
                lm_w, ctc_w, label_w = loss_weights(stage_idx)
                print(f"\n[speechlm] stage {stage_idx + 1}/{len(stages)} at step {step}: tasks {', '.join(stages[stage_idx].tasks)}; "
                      f"training {'+'.join(stages[stage_idx].trainable)}; loss {lm_w:g}*lm + {ctc_w:g}*ctc"
                      + (f" + {label_w:g}*label" if label_w else ""), flush=True)
        micro = 0
        for batch, weight, unit in micro_batches():
            consumed += 1
            batch = move(batch, device)
            ctx = dtype_ctx() if dtype_ctx else torch.autocast(device.type, enabled=False)
            with ctx:
                lm_w, ctc_w, label_w = loss_weights(stage_idx)
                loss_sum, n_tok = net(batch, per_example=cfg.train.loss_norm == "example", lm_weight=lm_w, ctc_weight=ctc_w,
                                      label_weight=label_w)
            loss_sum, n_tok = loss_sum * weight, n_tok * int(weight)
            n_global = all_reduce_(n_tok.detach().clone().float())
            # sum / global tokens, times world because DDP and FSDP average gradients over ranks
            loss = loss_sum * world / n_global.clamp(min=1) / cfg.train.grad_accum
            loss.backward()
            parts, model.last_losses = model.last_losses, {}
            sums[0] += loss_sum.detach().double()
            sums[1] += n_tok.double()
            if "ctc" in parts and weight:
                sums[2] += parts["ctc"].double()
                sums[3] += parts["ctc_tokens"]
            if "label" in parts and weight:
                sums[4] += parts["label"].double()
                sums[5] += parts["label_pairs"]
                sums[6] += parts["label_right"]
            if weight:
                window["samples"] += len(batch.ids); window["audio_s"] += audio_seconds(batch)
            if unit is not None:
                shard_ds.record(unit)
            micro += 1
            if micro % cfg.train.grad_accum:
                continue
            if fsdp and len(active) < len(named):  # parts this stage freezes (set_stage_trainable)
                for n, p in named:
                    if n not in active:
                        p.grad = None
            sync_replicated_grads(whole)
            if cfg.train.clip_grad > 0:
                clip_grad_norm_(params, cfg.train.clip_grad)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log_now = step % cfg.train.log_every == 0 or step == cfg.train.max_steps
            if log_now:  # the global loss, not rank 0's share; the one wait for the device per log step
                loss_total, tokens, ctc_total, ctc_tokens, label_total, label_pairs, label_right = all_reduce_(sums.clone()).tolist()
                sums.zero_()
            if rank == 0 and log_now:
                dt = max(1e-9, time.time() - window["t0"])
                rec = {"step": step, "split": "train", "loss": loss_total / max(1, tokens),
                       "lr": scheduler.get_last_lr()[0], "samples_per_s": window["samples"] * world / dt,
                       "audio_s_per_s": window["audio_s"] * world / dt, "elapsed_s": time.time() - t_start, "epoch": epoch_now(),
                       "stage": stage_idx}
                if ctc_tokens:
                    rec["ctc_loss"] = ctc_total / ctc_tokens  # per transcript token
                if label_pairs:  # per (clip, label) pair, and the share the head alone gets right
                    rec["label_loss"], rec["label_acc"] = label_total / label_pairs, label_right / label_pairs
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                for k in ("loss", "lr", "samples_per_s", "ctc_loss", "label_loss", "label_acc"):
                    if k in rec:
                        writer.add_scalar(f"train/{k}", rec[k], step)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", sps=f"{rec['samples_per_s']:.2f}")
            if log_now:
                window = {"samples": 0, "audio_s": 0.0, "t0": time.time()}
            if bar is not None:
                bar.update(1)
            if val_cuts and cfg.train.eval_every and step % cfg.train.eval_every == 0:
                validate()
            stage_end = bool(stages) and stage_at(stages, step) != stage_idx
            last = step >= cfg.train.max_steps or step == cfg.train.stop_at_step
            if (step % cfg.train.save_every == 0 or stage_end) and not last:
                checkpoint()  # also at every stage boundary: a control run can fork there (speechlm.demos.multitask)
            timed_out = bool(cfg.train.max_minutes) and (time.time() - t_start) / 60 >= cfg.train.max_minutes
            if world > 1 and cfg.train.max_minutes:  # every rank must stop at the same step, or one would wait in a
                flag = torch.tensor([float(timed_out)], device=device)  # collective forever (needs a sync: only with a limit)
                timed_out = bool(all_reduce_(flag, op=dist.ReduceOp.MAX).item())
            if last or timed_out:
                stop = True
                if timed_out and rank == 0:
                    print(f"\n[speechlm] time limit of {cfg.train.max_minutes} min reached at step {step}", flush=True)
                break
            if stages and stage_at(stages, step) != stage_idx:
                break  # the stage is over; the outer loop sets up the next one
        else:
            consumed = 0  # epoch finished: the sampler moved to the next epoch by itself
            if shard_ds is not None:
                shard_ds.set_epoch(shard_ds.epoch + 1)

    # ---- save / cleanup ---------------------------------------------------------------------------
    if rank == 0:
        bar.close()
    if val_cuts:
        validate()
    final = checkpoint()
    if rank == 0:
        writer.close()
        try:
            from speechlm.training.loss_plot import plot_loss_curve

            plot_loss_curve(log_path, out_dir / "loss.png")
        except FileNotFoundError:
            pass
        print(f"[speechlm] saved {final}", flush=True)
    net = None  # the DDP wrapper goes before its process group (distributed.cleanup)
    cleanup()
    return final if final is not None else out_dir / CKPT_DIR


def _log_val(rec: dict[str, float], step: int, log_path: Path, writer) -> None:
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "split": "val", **rec}) + "\n")
    for k, v in rec.items():
        writer.add_scalar(f"val/{k}", v, step)
    extra = "".join(f", {k} {v:.3f}" for k, v in rec.items() if k != "loss")
    print(f"\n[speechlm] step {step}: val loss {rec['loss']:.3f}{extra}", flush=True)


def run_train(recipe: str = "tiny", train_manifest: str = "", val_manifest: str = "", out_dir: str = "",
              resume: str = "", max_steps: int = 0, skip_bad: bool = False, set: list[str] = ()) -> Path:
    """Train a speech LM from a recipe; checkpoints, logs (JSONL, TensorBoard) and loss.png go to the run folder.

    recipe: shipped recipe name (`speechlm ls recipes`) or a YAML file.
    train_manifest: training manifest (overrides data.train_manifest).
    val_manifest: validation manifest (overrides data.val_manifest).
    out_dir: run folder (overrides train.out_dir).
    resume: continue from a checkpoint or run folder, or `auto` for the run folder's latest checkpoint.
    max_steps: optimizer steps (overrides train.max_steps when > 0).
    skip_bad: skip and count bad manifest lines / audio instead of stopping (data.skip_bad).
    set: further overrides as section.field=value, e.g. model.adapter=conv train.lr=5e-4.
    """
    return train(recipe_from_cli(recipe, train_manifest, val_manifest, out_dir, max_steps, skip_bad, set),
                 resume=resume or None)


def recipe_from_cli(recipe: str, train_manifest: str = "", val_manifest: str = "", out_dir: str = "",
                    max_steps: int = 0, skip_bad: bool = False, overrides: list[str] = ()) -> RecipeConfig:
    """The recipe `speechlm train` runs: the named recipe with the command line's flags and ``--set`` applied."""
    from speechlm.config import load_recipe

    overrides = list(overrides)
    for key, value in (("data.train_manifest", train_manifest), ("data.val_manifest", val_manifest), ("train.out_dir", out_dir)):
        if value:
            overrides.append(f"{key}={value}")
    if max_steps > 0:
        overrides.append(f"train.max_steps={max_steps}")
    if skip_bad:
        overrides.append("data.skip_bad=true")
    return load_recipe(recipe, overrides)

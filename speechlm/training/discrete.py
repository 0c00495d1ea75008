"""Training of the discrete speech LM (SpeechGPT / ESPnet-SpeechLM): examples, stage table, optimisation, resume.

Owns the discrete trainer :func:`train_discrete` (``speechlm train`` runs it for a recipe with
``discrete.rendering`` set), its stage table (:func:`parse_discrete_stages`: rows of steps, tasks and a loss
region), the unit store (every clip of the manifest, and every speech field a task names, as tokenizer output)
and the example renderer :func:`render_example` (one (clip, task) pair -> stream frames and a loss mask).

SpeechGPT's three stages (arXiv 2305.11000; 0nutation/SpeechGPT src/train/*.py) map to rows:
  1. ``audiolm`` with ``loss_region: all`` (ma_pretrain.py: labels = input_ids over unit sequences);
  2. ``asr`` + ``tts`` (cross-modal instruction tuning, both directions, paraphrase pools);
  3. ``chain-of-modality`` (spoken question -> transcript, <|ta|> text answer, <|ua|> spoken answer).
The optimiser, schedule and RNG helpers are the continuous loop's (speechlm.training.loop), the multi-process
machinery its too (speechlm.training.distributed): under ``torchrun`` every rank renders the same global batch
plan and takes its share of each batch (``[rank::world]``), the loss is divided by the target frames of the whole
global batch, and ``train.strategy`` picks DDP or FSDP2 (a sharded run's checkpoints resume with any number of
processes). Resume is exact: the data order and the instruction of each example are functions of (seed, stage,
epoch, index), the optimizer, scheduler and RNG states are checkpointed (speechlm.checkpoint.discrete), so a
resumed run ends with the same weights as an uninterrupted one, across stage boundaries too.

Legend: B batch, T frames of one example, nq streams.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from speechlm.checkpoint.discrete import (build_discrete_model, load_discrete_training_state, save_discrete_checkpoint,
                                          stage_rows, write_discrete_checkpoint)
from speechlm.checkpoint.folder import SHARDED_DIR
from speechlm.config import RecipeConfig, to_dict
from speechlm.data.manifest import Cut, ManifestError, read_manifest
from speechlm.model.discrete import StreamBatch
from speechlm.model.vocab import check_layout
from speechlm.tasks import Task, get_task
from speechlm.tasks.mixture import build_mixture, parse_stages, parse_task_weights, stage_at
from speechlm.tasks.render import IGNORE, LOSS_REGIONS, SPEECH, render_streams, render_units, units_to_string
from speechlm.training.distributed import (all_reduce_, cleanup, clip_grad_norm_, decoder_layers, load_full_optimizer,
                                           load_sharded, prepare_layers, replicated, save_sharded_checkpoint,
                                           setup_distributed, sync_replicated_grads, wrap)
from speechlm.training.loop import lr_lambda, rng_state, set_rng_state
from speechlm.utils import write_json


# ---------------------------------------------------------------------------------------------------
# stage table
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscreteStage:
    steps: int
    """Optimizer steps."""
    tasks: tuple[str, ...]
    """Task names with optional weights (`tts:2`)."""
    loss_region: str
    """`answer`, `turn` or `all` (speechlm.tasks.render.LOSS_REGIONS)."""


def is_lm_task(task: Task) -> bool:
    """An LM task (audiolm, textlm): its inputs are its outputs, so the example is the sequence alone."""
    return task.inputs == task.outputs


def parse_discrete_stages(rows: list[dict], max_steps: int) -> list[DiscreteStage]:
    """Check ``discrete.stages`` (steps and tasks as the continuous table checks them, plus ``loss_region``;
    default `all` for a stage of LM tasks only, else `answer`)."""
    where = "discrete.stages"
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{where}[{i}]: expected a mapping with steps, tasks, loss_region")
        unknown = set(row) - {"steps", "tasks", "loss_region"}
        if unknown:
            raise ValueError(f"{where}[{i}]: unknown key(s) {sorted(unknown)}; a stage has steps, tasks, loss_region")
    base = parse_stages([{"steps": r.get("steps"), "tasks": r.get("tasks")} for r in rows], max_steps, where=where)
    out = []
    for i, (row, st) in enumerate(zip(rows, base)):
        lm_only = all(is_lm_task(get_task(t.partition(":")[0])) for t in st.tasks)
        region = row.get("loss_region", "all" if lm_only else "answer")
        if region not in LOSS_REGIONS:
            raise ValueError(f"{where}[{i}].loss_region: expected one of {', '.join(LOSS_REGIONS)}, got {region!r}")
        out.append(DiscreteStage(st.steps, st.tasks, region))
    return out


# ---------------------------------------------------------------------------------------------------
# units of every clip
# ---------------------------------------------------------------------------------------------------
def speech_fields(task: Task) -> list[str]:
    return [f for f, m in task.inputs + task.outputs if m == SPEECH]


def _audio_path(cut: Cut, field: str, manifest_dir: Path) -> str | None:
    """The audio file of a speech field: the clip itself for ``audio``, else a path in the line's labels."""
    if field == "audio":
        return cut.audio
    value = cut.labels.get(field)
    if not value:
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else manifest_dir / p)


def tokenize_units(cuts: list[Cut], tokenizer, tokenizer_dir: Path, manifest: Path, fields: set[str],
                   progress: bool = False) -> dict[str, Any]:
    """audio key -> TokenSeq for every clip and every other speech field the tasks name. Clips already tokenized
    by ``speechlm prepare units`` (``TOKDIR/units/<manifest stem>.jsonl``, matched by id and tokenizer hash) are
    read, the rest encoded now."""
    from speechlm.data.audio import load_audio
    from speechlm.tokenizers.units import TokenSeq

    store: dict[str, Any] = {}
    prepared = tokenizer_dir / "units" / f"{manifest.stem}.jsonl"
    log = tokenizer_dir / "prepare.json"
    same_tok = log.exists() and json.loads(log.read_text()).get("units", {}).get("hash") == tokenizer.hash
    if prepared.exists() and same_tok:
        by_id = {c.id: c for c in cuts}
        for line in prepared.read_text().splitlines():
            row = json.loads(line)
            if row["id"] in by_id:
                store[by_id[row["id"]].audio] = TokenSeq(
                    np.asarray(row["units"], np.int64), np.asarray(row["durations"], np.int64),
                    np.asarray(row["streams"], np.int64) if row.get("streams") is not None else None)
    todo: list[tuple[str, Cut, str]] = []
    for c in cuts:
        for f in sorted(fields):
            path = _audio_path(c, f, manifest.parent)
            if path and path not in store and path not in {t[0] for t in todo}:
                todo.append((path, c, f))
    for i in range(0, len(todo), 16):
        chunk = todo[i:i + 16]
        waves = [load_audio(p, start=c.start, duration=c.duration) if f == "audio" else load_audio(p) for p, c, f in chunk]
        for (p, _, _), seq in zip(chunk, tokenizer.encode_batch(waves, [p for p, _, _ in chunk])):
            store[p] = seq
        if progress:
            print(f"[speechlm] tokenized {min(i + 16, len(todo))}/{len(todo)} clips", flush=True)
    return store


def align_unit_rows(model, cuts: list[Cut], store: dict, tokenizer, text_tok, seed: int) -> dict:
    """``discrete.unit_init: ctc``: the unit rows trained by CTC against the transcripts of the clips
    (speechlm.model.unit_align), written into the model; returns the aligner's report."""
    from speechlm.model.unit_align import ctc_unit_rows
    from speechlm.tokenizers.dedup import unit_runs

    lay = model.layout
    units, tokens = [], []
    for c in cuts:
        if c.text.strip() and c.audio in store:
            units.append(unit_runs(tokenizer, store[c.audio])[0].tolist())
            tokens.append(text_tok(c.text.strip(), add_special_tokens=False).input_ids)
    emb = model.causal_lm.get_input_embeddings()
    weight = emb.weight if hasattr(emb, "weight") else emb.base_layer.weight  # peft wraps the embedding
    rows, report = ctc_unit_rows(units, tokens, weight[:lay.text_vocab], weight[lay.unit_start:lay.marker_start],
                                 seed=seed)
    model.set_unit_rows(rows)
    print(f"[speechlm] unit rows aligned by CTC on {report['clips']} transcripts: loss {report['loss_start']:.2f} -> "
          f"{report['loss_end']:.2f} ({report['seconds']:.0f} s)", flush=True)
    return report


def speech_tokens(tokenizer, seq, rendering: str, nq: int) -> list:
    """What a speech field contributes: deduplicated units (SpeechGPT's reduced units) for one stream, frame-level
    [F][nq] rows (stream 0 the unit, then codec codes; ESPnet codec_ssl) for several."""
    from speechlm.tokenizers.dedup import unit_runs

    if rendering == "streams" and nq > 1:
        return np.asarray(seq.streams).tolist()
    return unit_runs(tokenizer, seq)[0].tolist()


# ---------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------
def example_of(cut: Cut) -> dict[str, Any]:
    return {"id": cut.id, "text": cut.text, "labels": cut.labels, **{k: v for k, v in cut.labels.items() if k != "text"}}


def render_example(task: Task, example: dict, speech: dict[str, list], rendering: str, model, text_tok,
                   instruction: str, loss_region: str, system_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """One example -> frames [T] (units) or [T, nq] (streams) of layout ids, and its loss mask [T]."""
    layout = model.layout
    if rendering == "units":
        if is_lm_task(task):
            field, modality = task.inputs[0]
            body = units_to_string(speech[field]) if modality == SPEECH else str(example.get(field) or "").strip()
            if not body:
                raise ValueError(f"task {task.name!r}: empty field {field!r} in {example.get('id', '?')!r}")
            ids = text_tok(body, add_special_tokens=False).input_ids + [text_tok.convert_tokens_to_ids(text_tok.eos_token)]
            return torch.tensor(ids), torch.ones(len(ids), dtype=torch.bool)  # [T], [T]
        r = render_units(task, example, speech, text_tok, instruction, system_prompt=system_prompt, loss_region=loss_region)
        return torch.tensor(r.input_ids), torch.tensor(r.labels) != IGNORE  # [T], [T]
    lm_task = dataclasses.replace(task, inputs=()) if is_lm_task(task) else task  # ESPnet: no conditions
    r = render_streams(lm_task, example, speech, layout, text_tok, loss_region=loss_region)
    return torch.tensor(r.frames), torch.tensor(r.loss_mask)  # [T, nq], [T]


class StageData:
    """The examples of one stage and their order: epoch e's permutation and example i's instruction are drawn
    from generators seeded by (seed, stage, e[, i]), so a position (epoch, batch) fixes everything that follows."""

    def __init__(self, k: int, stage: DiscreteStage, cuts: list[Cut], store: dict, tokenizer, model, text_tok,
                 cfg: RecipeConfig, manifest_dir: Path):
        self.k, self.stage, self.cfg, self.model, self.text_tok = k, stage, cfg, model, text_tok
        self.seed, self.batch_size = cfg.train.seed, cfg.discrete.batch_size
        ex_cuts, ex_tasks, report = build_mixture(cuts, parse_task_weights(list(stage.tasks)), cfg.data.temperature,
                                                  seed=cfg.train.seed + k)
        self.items, dropped = [], {"no_speech": 0, "too_long": 0}
        for cut, task in zip(ex_cuts, ex_tasks):
            paths = {f: _audio_path(cut, f, manifest_dir) for f in speech_fields(task)}
            if any(p is None or p not in store for p in paths.values()):
                dropped["no_speech"] += 1
                continue
            speech = {f: speech_tokens(tokenizer, store[p], cfg.discrete.rendering, model.nq) for f, p in paths.items()}
            item = (task, example_of(cut), speech)
            frames, _ = self._render(item, task.instructions[0])
            if frames.shape[0] > cfg.discrete.max_frames:
                dropped["too_long"] += 1
                continue
            self.items.append(item)
        if not self.items:
            raise ManifestError(f"stage {k + 1} ({', '.join(stage.tasks)}): no usable example ({dropped})")
        self.report = {**report, "dropped": dropped, "examples_used": len(self.items)}

    def _render(self, item, instruction: str):
        task, example, speech = item
        d = self.cfg.discrete
        return render_example(task, example, speech, d.rendering, self.model, self.text_tok, instruction,
                              self.stage.loss_region, d.system_prompt)

    def batches_per_epoch(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def batch(self, pos: dict[str, int], rank: int = 0, world: int = 1) -> tuple[StreamBatch, dict[str, int], float]:
        """This rank's share of the global batch at ``pos`` ({epoch, batch}), the position after it, and the
        share's weight: 0 for a rank the batch has no example for (the epoch's last, short batch), which then runs
        the batch's first example as a stand-in so that every rank makes the same collective calls."""
        e, b = pos["epoch"], pos["batch"]
        order = np.random.default_rng([self.seed, self.k, e]).permutation(len(self.items))
        frames, masks = [], []
        chosen = order[b * self.batch_size:(b + 1) * self.batch_size]
        share = chosen[rank::world]
        weight = 1.0 if len(share) else 0.0
        for i in share if len(share) else chosen[:1]:
            task = self.items[i][0]
            instr = random.Random(f"{self.seed}:{self.k}:{e}:{int(i)}").choice(task.instructions)
            f, m = self._render(self.items[i], instr)
            frames.append(f)
            masks.append(m)
        nxt = {"epoch": e, "batch": b + 1} if b + 1 < self.batches_per_epoch() else {"epoch": e + 1, "batch": 0}
        return StreamBatch.collate(frames, masks, self.model.layout.pad_id), nxt, weight


def to_device(batch: StreamBatch, device: torch.device) -> StreamBatch:
    """Frames and loss mask to ``device`` (pinned first, so the copy is asynchronous); the lengths stay on the host,
    where ``pattern_rows`` builds the attention mask from them."""
    if device.type == "cpu":
        return batch
    return dataclasses.replace(batch, frames=batch.frames.pin_memory().to(device, non_blocking=True),
                               loss_mask=batch.loss_mask.pin_memory().to(device, non_blocking=True))


# ---------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------
def train_discrete(cfg: RecipeConfig, resume: str | None = None, progress: bool = True) -> Path:
    """Train the discrete speech LM ``cfg`` describes; returns the final checkpoint folder. ``resume``: a
    checkpoint or run folder, or ``auto`` (the run folder's latest checkpoint)."""
    from speechlm.tokenizers.registry import load_tokenizer

    d, t = cfg.discrete, cfg.train
    if not d.tokenizer:
        raise ValueError("discrete.tokenizer: give the tokenizer folder (`speechlm prepare units`), "
                         "e.g. --set discrete.tokenizer=runs/tok")
    if not cfg.data.train_manifest or not Path(cfg.data.train_manifest).exists():
        raise ManifestError(f"data.train_manifest {cfg.data.train_manifest!r}: manifest not found")
    rank, world, device = setup_distributed(t.device, t.strategy)
    fsdp = t.strategy == "fsdp"
    if t.threads:
        torch.set_num_threads(t.threads)
    out_dir, tok_dir, manifest = Path(t.out_dir), Path(d.tokenizer), Path(cfg.data.train_manifest)
    stages = parse_discrete_stages(stage_rows(cfg), t.max_steps)
    if d.batch_size < world:
        raise ValueError(f"discrete.batch_size={d.batch_size} < {world} processes: some rank would get no example")
    tokenizer = load_tokenizer(tok_dir)
    model, text_tok = build_discrete_model(cfg, tokenizer)
    model.to(device).train()
    cuts = read_manifest(manifest)
    fields = {f for st in stages for spec in st.tasks for f in speech_fields(get_task(spec.partition(":")[0]))}
    t0 = time.time()
    store = tokenize_units(cuts, tokenizer, tok_dir, manifest, fields, progress=progress and rank == 0)
    tokenize_s = time.time() - t0
    align = align_unit_rows(model, cuts, store, tokenizer, text_tok, t.seed) if d.unit_init == "ctc" and not resume else None
    data = [StageData(k, st, cuts, store, tokenizer, model, text_tok, cfg, manifest.parent) for k, st in enumerate(stages)]

    step, stage_idx, pos = 0, 0, {"epoch": 0, "batch": 0}
    torch.manual_seed(t.seed)  # dropout draws: independent of how many draws building the model took
    weights = state = ckpt = None
    if resume:
        weights, state, saved_layout, ckpt = load_discrete_training_state(out_dir if resume == "auto" else resume)
        check_layout(saved_layout, model.layout, ckpt)
        if weights is not None:  # a sharded checkpoint's parameters are read after wrapping
            model.load_trainable_state_dict(weights)
    names = {n for n, p in model.named_parameters() if p.requires_grad}  # every stage trains the same parts
    layers = decoder_layers(model.llm)
    prepare_layers(layers, t.activation_checkpointing, t.compile, t.compile_backend)
    net = wrap(model, layers, t.strategy, world, device, t.bf16)
    params = [p for n, p in model.named_parameters() if n in names]  # after wrapping: FSDP's shards
    whole = replicated(params) if fsdp else []
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        t.warmup_steps, t.max_steps, stage_steps=[s.steps for s in stages] if t.stage_schedule else None))
    if resume:
        if weights is None:
            load_sharded(ckpt / SHARDED_DIR, model, optimizer, names, state["optimizer"]["param_groups"])
        elif fsdp:
            load_full_optimizer(model, optimizer, [n for n, _ in model.named_parameters() if n in names], state["optimizer"])
        else:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, stage_idx, pos = state["step"], state["stage"], dict(state["position"])
        set_rng_state(state["rng"])
        if rank == 0:
            print(f"[speechlm] resumed from {ckpt} at step {step} (stage {stage_idx + 1})", flush=True)

    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", to_dict(cfg))
        write_json(out_dir / "data_report.json", {"clips": len(cuts), "tokenize_seconds": round(tokenize_s, 1),
                                                  "stages": [s.report for s in data],
                                                  **({"unit_rows_ctc": align} if align else {})})
        n_all = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in params)
        print(f"[speechlm] discrete LM ({d.rendering}, {model.pattern}, nq={model.nq}, vocabulary {model.layout.lm_vocab}): "
              f"{len(cuts)} clips, {n_train / 1e6:.2f}M trainable of {n_all / 1e6:.1f}M params, world {world}; stages "
              + "; ".join(f"{s.steps} x {'+'.join(s.tasks)} ({s.loss_region}, {len(x.items)} examples)" for s, x in zip(stages, data)),
              flush=True)

    def checkpoint() -> Path | None:
        """Every rank calls (a sharded save is collective); rank 0 writes the files. Returns the folder on rank 0."""
        st = {"scheduler": scheduler.state_dict(), "step": step, "stage": stage_idx, "position": dict(pos), "rng": rng_state()}
        if fsdp:
            def write_rest(folder: Path, full: dict, groups: list[dict]) -> None:
                write_discrete_checkpoint(folder, model, cfg, step, {**st, "optimizer": {"param_groups": groups}}, tok_dir,
                                          weights=full)

            return save_sharded_checkpoint(out_dir, step, rank, model, optimizer, names, write_rest)
        if rank != 0:
            return None
        return save_discrete_checkpoint(model, cfg, out_dir, step, {**st, "optimizer": optimizer.state_dict()}, tok_dir)

    log_path = out_dir / "train_log.jsonl"
    # summed on the device, read at log steps: weighted loss and target frames (this rank's)
    t_start, sums = time.time(), torch.zeros(2, dtype=torch.float64, device=device)
    dtype_ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if t.bf16 else None
    while step < t.max_steps:
        k = stage_at(stages, step)
        if k != stage_idx:  # the next stage: its own data from its start
            stage_idx, pos = k, {"epoch": 0, "batch": 0}
            if rank == 0:
                print(f"[speechlm] stage {k + 1}/{len(stages)} at step {step}: {'+'.join(stages[k].tasks)} "
                      f"(loss region {stages[k].loss_region})", flush=True)
        for _ in range(t.grad_accum):
            batch, pos, weight = data[stage_idx].batch(pos, rank, world)
            with dtype_ctx() if dtype_ctx else torch.autocast(device.type, enabled=False):
                total, frames = net(to_device(batch, device))  # summed weighted CE, target frames
            total, frames = total * weight, frames * int(weight)
            n_global = all_reduce_(frames.detach().clone().float())
            # sum / the global batch's frames, times world because DDP and FSDP average gradients over ranks
            (total * world / n_global.clamp(min=1) / t.grad_accum).backward()
            sums[0] += total.detach().double()
            sums[1] += frames.double()
        sync_replicated_grads(whole)
        if t.clip_grad > 0:
            clip_grad_norm_(params, t.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % t.log_every == 0 or step == t.max_steps:
            loss_total, n_frames = all_reduce_(sums.clone()).tolist()  # the one wait for the device per log step
            sums.zero_()
            rec = {"step": step, "split": "train", "stage": stage_idx, "loss": loss_total / max(1, n_frames),
                   "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t_start, 2)}
            if rank == 0:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                if progress:
                    print(f"[speechlm] step {step}/{t.max_steps} stage {stage_idx + 1} loss {rec['loss']:.3f} "
                          f"({rec['elapsed_s']:.0f} s)", flush=True)
        stage_end = stage_at(stages, step) != stage_idx
        last = step >= t.max_steps or step == t.stop_at_step
        if (step % t.save_every == 0 or stage_end) and not last:
            checkpoint()  # also at every stage boundary
        timed_out = bool(t.max_minutes) and (time.time() - t_start) / 60 >= t.max_minutes
        if world > 1 and t.max_minutes:  # every rank stops at the same step (a wait for the device: only with a limit)
            timed_out = bool(all_reduce_(torch.tensor([float(timed_out)], device=device), op=dist.ReduceOp.MAX).item())
        if timed_out and rank == 0:
            print(f"[speechlm] time limit of {t.max_minutes} min reached at step {step}", flush=True)
        if last or timed_out:
            break
    final = checkpoint()
    if rank == 0:
        print(f"[speechlm] saved {final}", flush=True)
    net = None  # the DDP wrapper goes before its process group (distributed.cleanup)
    cleanup()
    return final if final is not None else out_dir / "checkpoints"


def run_train(recipe: str = "tiny", train_manifest: str = "", val_manifest: str = "", out_dir: str = "",
              resume: str = "", max_steps: int = 0, skip_bad: bool = False, set: list[str] = ()) -> Path:
    """Train a speech LM from a recipe; checkpoints, logs (JSONL, TensorBoard) and loss.png go to the run folder.

    A recipe with discrete.rendering set trains the discrete speech LM (this module); any other the continuous
    model (speechlm.training.loop.run_train, whose command line this is).

    recipe: shipped recipe name (`speechlm ls recipes`) or a YAML file.
    train_manifest: training manifest (overrides data.train_manifest).
    val_manifest: validation manifest (overrides data.val_manifest).
    out_dir: run folder (overrides train.out_dir).
    resume: continue from a checkpoint or run folder, or `auto` for the run folder's latest checkpoint.
    max_steps: optimizer steps (overrides train.max_steps when > 0).
    skip_bad: skip and count bad manifest lines / audio instead of stopping (data.skip_bad).
    set: further overrides as section.field=value, e.g. model.adapter=conv train.lr=5e-4.
    """
    from speechlm.training import loop

    cfg = loop.recipe_from_cli(recipe, train_manifest, val_manifest, out_dir, max_steps, skip_bad, set)
    if cfg.discrete.rendering:
        return train_discrete(cfg, resume=resume or None)
    return loop.train(cfg, resume=resume or None)

"""Training, saving and loading of the unit vocoder (:class:`~speechlm.vocoders.unit_vocoder.UnitVocoder`).

Owns :func:`train_vocoder` (targets computed once per clip and kept in memory, batches by audio seconds, AdamW
with linear warm-up and cosine decay over the step or time budget, L1 on the normalised WORLD and log-mel
features + BCE on voicing + MSE on ``log(d + 1)`` durations), the folder format (``vocoder.json`` +
``vocoder.safetensors``, no pickle, written atomically) and :func:`load_vocoder`, which refuses a tokenizer
hash or K other than the ones the vocoder was trained on.

Dimension legend:
    B  clips in a batch     U  units     T  100-Hz frames     W  coded WORLD dims     M  mel bins (80)
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speechlm.config import VocoderConfig
from speechlm.data.mel import HOP, SAMPLE_RATE, log_mel
from speechlm.utils import atomic_dir, write_json
from speechlm.vocoders import world
from speechlm.vocoders.unit_vocoder import UnitVocoder

FORMAT = "speechlm-unit-vocoder"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, LOG_FILE, FOLDER = "vocoder.json", "vocoder.safetensors", "vocoder_log.jsonl", "vocoder"
LOG_EVERY = 10  # steps between log lines
MIN_LR_FACTOR = 0.05  # cosine decays to 5% of the peak learning rate, not to zero
STD_FLOOR = 1e-3  # a (nearly) constant feature dim is scaled by at most 1/STD_FLOOR

Example = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(units [U] int64 in 0..K-1, 50-Hz durations [U] int64, 16-kHz wave [N] float32)."""


class VocoderMismatchError(ValueError):
    """A vocoder folder was given units of a tokenizer (hash or K) other than the one it was trained on."""


@dataclasses.dataclass
class _Clip:
    units: torch.Tensor  # [U] long
    durations: torch.Tensor  # [U] long, 50 Hz
    world: torch.Tensor  # [T, W] raw coded WORLD features
    mel: torch.Tensor  # [T, M] natural-log mel
    seconds: float


def expected_unit_frames(num_samples: int) -> int:
    """50-Hz frames a tokenizer gives a clip of ``num_samples``: ``ceil((N // 160) / 2)``."""
    return -(-(num_samples // HOP) // 2)


def _targets(examples: Sequence[Example], k: int, cfg: VocoderConfig, progress: bool) -> list[_Clip]:
    clips, cache = [], {}
    t0 = time.time()
    for i, (units, durations, wave) in enumerate(examples):
        units = np.asarray(units, dtype=np.int64).reshape(-1)
        durations = np.asarray(durations, dtype=np.int64).reshape(-1)
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if units.shape != durations.shape or units.size == 0:
            raise ValueError(f"example {i}: units {units.shape} and durations {durations.shape} must be the same non-empty length")
        if units.min() < 0 or units.max() >= k:
            raise ValueError(f"example {i}: units must lie in 0..{k - 1} (k = {k}), got {units.min()}..{units.max()}")
        if durations.min() < 1:
            raise ValueError(f"example {i}: durations must be >= 1, got {durations.min()}")
        key = id(examples[i][2])  # re-voiced copies (VocoderConfig.speaker_perturb) share their original's wave
        if key not in cache:
            cache[key] = (torch.from_numpy(world.world_features(wave, cfg.f0_method, cfg.envelope_dims)),  # [T, W]
                          log_mel(wave))  # [T, M]
        feats, mel = cache[key]
        t = len(mel)
        if abs(2 * int(durations.sum()) - t) > 2:  # 2F is T - 1 or T when the durations describe this wave
            raise ValueError(f"example {i}: durations sum to {int(durations.sum())} 50-Hz frames but the wave has "
                             f"{wave.size} samples (expected {expected_unit_frames(wave.size)} frames): units of another clip?")
        clips.append(_Clip(torch.from_numpy(units), torch.from_numpy(durations), feats, mel,
                           wave.size / SAMPLE_RATE))
        if progress and (i + 1) % 50 == 0:
            print(f"vocoder targets: {i + 1}/{len(examples)} clips, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return clips


def _stats(clips: list[_Clip], vuv_index: int) -> dict[str, torch.Tensor]:
    w = torch.cat([c.world for c in clips])  # [sum T, W]
    m = torch.cat([c.mel for c in clips])  # [sum T, M]
    w_mean, w_std = w.mean(0), w.std(0).clamp(min=STD_FLOOR)
    w_mean[vuv_index], w_std[vuv_index] = 0.0, 1.0  # the vuv column is a 0/1 target of a logit: not normalised
    return {"world_mean": w_mean, "world_std": w_std, "mel_mean": m.mean(0), "mel_std": m.std(0).clamp(min=STD_FLOOR)}


def _batches(clips: list[_Clip], seconds: float, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of batches of about ``seconds`` audio each, of clips of similar length (little padding),
    in random order."""
    lengths = np.array([c.seconds for c in clips])
    order = np.argsort(lengths * rng.uniform(0.9, 1.1, len(clips)))  # length order, lightly shuffled
    batches, cur, total = [], [], 0.0
    for i in order:
        cur.append(int(i))
        total += lengths[i]
        if total >= seconds:
            batches.append(cur)
            cur, total = [], 0.0
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _collate(clips: list[_Clip]) -> dict:
    b, u_max = len(clips), max(len(c.units) for c in clips)
    t_max = max(len(c.mel) for c in clips)
    units = torch.zeros(b, u_max, dtype=torch.long)  # [B, U]
    durations = torch.zeros(b, u_max, dtype=torch.long)  # [B, U]
    unit_mask = torch.zeros(b, u_max, dtype=torch.bool)  # [B, U]
    feats = torch.zeros(b, t_max, clips[0].world.shape[1])  # [B, T, W]
    mel = torch.zeros(b, t_max, clips[0].mel.shape[1])  # [B, T, M]
    for i, c in enumerate(clips):
        n, t = len(c.units), len(c.mel)
        units[i, :n], durations[i, :n], unit_mask[i, :n] = c.units, c.durations, True
        feats[i, :t], mel[i, :t] = c.world, c.mel
    return {"units": units, "durations": durations, "unit_mask": unit_mask, "world": feats, "mel": mel,
            "frames": [len(c.mel) for c in clips]}


def vocoder_losses(model: UnitVocoder, batch: dict) -> dict[str, torch.Tensor]:
    """The training losses of one batch: ``world`` (L1, normalised continuous WORLD dims), ``vuv`` (BCE),
    ``mel`` (L1, normalised), ``dur`` (MSE on log(d + 1)) and their sum ``loss``."""
    out = model(batch["units"], batch["unit_mask"], batch["durations"], batch["frames"])
    mask = out["mask"].float()[..., None]  # [B, T, 1]
    n_frames = mask.sum()
    target_w = (batch["world"] - model.world_mean) / model.world_std  # [B, T, W]
    cont = torch.ones(model.world_dims, dtype=torch.bool)
    cont[model.vuv_index] = False
    l_world = ((out["world"] - target_w).abs() * mask)[..., cont].sum() / (n_frames * int(cont.sum()))
    l_vuv = (torch.nn.functional.binary_cross_entropy_with_logits(
        out["world"][..., model.vuv_index], batch["world"][..., model.vuv_index], reduction="none") * mask[..., 0]).sum() / n_frames
    target_m = (batch["mel"] - model.mel_mean) / model.mel_std  # [B, T, M]
    l_mel = ((out["mel"] - target_m).abs() * mask).sum() / (n_frames * target_m.shape[-1])
    um = batch["unit_mask"].float()  # [B, U]
    l_dur = (((out["log_dur"] - torch.log1p(batch["durations"].float())) ** 2) * um).sum() / um.sum()
    return {"loss": l_world + l_vuv + l_mel + l_dur, "world": l_world, "vuv": l_vuv, "mel": l_mel, "dur": l_dur}


def _lr_factor(step: int, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to MIN_LR_FACTOR as ``progress`` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    cos = MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * cos


def _log(log, step: int, elapsed: float, lr: float, losses: dict, progress: bool) -> None:
    rec = {"step": step, "elapsed_s": round(elapsed, 2), "lr": lr, **losses}
    log.write(json.dumps(rec) + "\n")
    log.flush()
    if progress:
        print(f"vocoder step {step} {elapsed:.0f}s loss {losses['loss']:.4f} (world {losses['world']:.3f} "
              f"vuv {losses['vuv']:.3f} mel {losses['mel']:.3f} dur {losses['dur']:.3f})", file=sys.stderr, flush=True)


def train_vocoder(examples: Sequence[Example], k: int, tokenizer_hash: str, cfg: VocoderConfig, out: str | Path,
                  progress: bool = True) -> UnitVocoder:
    """Train a :class:`UnitVocoder` on ``(units, durations, wave)`` triples of one tokenizer (``k`` units,
    ``tokenizer_hash``) and save it into ``out/vocoder/``; the loss log goes to ``out/vocoder_log.jsonl``.

    Stops after ``cfg.max_steps`` steps (when > 0) or ``cfg.minutes`` of training, whichever comes first; the
    cosine schedule runs over whichever budget is nearer to running out."""
    if not examples:
        raise ValueError("train_vocoder needs at least one (units, durations, wave) example")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(examples, k, tokenizer_hash, cfg, Path(out), progress)
    finally:
        torch.set_num_threads(threads)


def _train(examples: Sequence[Example], k: int, tokenizer_hash: str, cfg: VocoderConfig, out: Path,
           progress: bool) -> UnitVocoder:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = UnitVocoder(k, cfg, tokenizer_hash)
    t_feat = time.time()
    clips = _targets(examples, k, cfg, progress)
    for name, value in _stats(clips, model.vuv_index).items():
        getattr(model, name).copy_(value)
    feat_seconds = time.time() - t_feat
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    budget = cfg.minutes * 60.0
    log_path = out / LOG_FILE
    log_path.write_text("")
    step, t0, last, queue, logged, last_lr = 0, time.time(), {}, [], 0, cfg.lr
    model.train()
    with open(log_path, "a", encoding="utf-8") as log:
        while True:
            elapsed = time.time() - t0
            done_steps = cfg.max_steps > 0 and step >= cfg.max_steps
            if done_steps or (budget > 0 and elapsed >= budget) or (budget <= 0 and cfg.max_steps <= 0):
                break
            if not queue:
                queue = _batches(clips, cfg.batch_seconds, rng)
            batch = _collate([clips[i] for i in queue.pop()])
            frac = max(step / cfg.max_steps if cfg.max_steps > 0 else 0.0, elapsed / budget if budget > 0 else 0.0)
            lr = cfg.lr * _lr_factor(step, cfg.warmup_steps, frac)
            for group in opt.param_groups:
                group["lr"] = lr
            losses = vocoder_losses(model, batch)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            last = {name: round(float(v.detach()), 5) for name, v in losses.items()}
            last_lr = lr
            if step % LOG_EVERY == 0 or step == 1:
                _log(log, step, time.time() - t0, lr, last, progress)
                logged = step
        if step and logged != step:  # the last step is always in the log
            _log(log, step, time.time() - t0, last_lr, last, progress)
    model.eval()
    meta = {"steps": step, "train_seconds": round(time.time() - t0, 2), "feature_seconds": round(feat_seconds, 2),
            "final_losses": last, "train_clips": len(clips), "train_audio_seconds": round(sum(c.seconds for c in clips), 2)}
    save_vocoder(model, out / FOLDER, meta)
    model.folder = str(out / FOLDER)
    return model


def save_vocoder(model: UnitVocoder, folder: str | Path, meta: dict | None = None) -> Path:
    """Write ``vocoder.json`` and ``vocoder.safetensors`` into ``folder`` atomically (all or nothing)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    lay = world.layout(model.cfg.envelope_dims)
    info = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "k": model.k, "tokenizer_hash": model.tokenizer_hash,
        "config": dataclasses.asdict(model.cfg),
        "feature_dims": {"world": model.world_dims, "mel": int(model.mel_mean.numel()),
                         "world_layout": {name: [s.start, s.stop] for name, s in lay.items()},
                         "frame_rate_hz": 100, "unit_rate_hz": 50, "sample_rate": SAMPLE_RATE},
        "normalisation": {name: [round(float(v), 6) for v in getattr(model, name)]
                          for name in ("world_mean", "world_std", "mel_mean", "mel_std")},
        **(meta or {}),
    }
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    with atomic_dir(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        write_json(tmp / CONFIG_FILE, info)
    return folder


def _resolve(folder: str | Path) -> Path:
    folder = Path(folder)
    if (folder / CONFIG_FILE).exists():
        return folder
    if (folder / FOLDER / CONFIG_FILE).exists():
        return folder / FOLDER
    raise FileNotFoundError(f"no unit vocoder in {folder}: expected {folder / CONFIG_FILE} "
                            f"(or {folder / FOLDER / CONFIG_FILE}); train one with train_vocoder")


def load_vocoder(folder: str | Path, tokenizer_hash: str | None = None, k: int | None = None) -> UnitVocoder:
    """A saved vocoder from its folder (``.../vocoder`` or the run folder holding it), in eval mode.

    Raises:
        VocoderMismatchError: ``tokenizer_hash`` or ``k`` is given and differs from what the vocoder was trained
            on (the units come from another tokenizer); the message names the folder and the field.
        FileNotFoundError / ValueError: no vocoder there, or a format this version cannot read.
    """
    from safetensors.torch import load_file

    folder = _resolve(folder)
    info = json.loads((folder / CONFIG_FILE).read_text())
    if info.get("format") != FORMAT or int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{folder / CONFIG_FILE}: format {info.get('format')!r} version {info.get('format_version')} "
                         f"is not a unit vocoder this speechlm reads ({FORMAT} <= {FORMAT_VERSION})")
    if tokenizer_hash is not None and tokenizer_hash != info["tokenizer_hash"]:
        raise VocoderMismatchError(
            f"{folder / CONFIG_FILE}: tokenizer_hash is {info['tokenizer_hash']!r} but the units come from tokenizer "
            f"{tokenizer_hash!r}: this vocoder was trained on another tokenizer's units; train one for this tokenizer")
    if k is not None and int(k) != int(info["k"]):
        raise VocoderMismatchError(
            f"{folder / CONFIG_FILE}: k is {info['k']} but the tokenizer has k = {k}: this vocoder was trained on "
            "another tokenizer's units; train one for this tokenizer")
    known = {f.name for f in dataclasses.fields(VocoderConfig)}
    cfg = VocoderConfig(**{key: v for key, v in info["config"].items() if key in known})
    model = UnitVocoder(info["k"], cfg, info["tokenizer_hash"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    model.folder = str(folder)
    return model.eval()

"""CPU benchmark: training from raw audio vs from cached encoder features (``speechlm.model.features``).

    python benchmarks/bench_features.py            # full run (~2-3 min on 2 cores), writes results/features_cpu.json
    python benchmarks/bench_features.py --quick    # smoke run (tiny random backbones), writes results/features_cpu_quick.json

What it measures, in one process, on the real backbones (``ModelConfig()``: Whisper tiny.en, stack adapter k=8,
SmolLM2-135M-Instruct with LoRA r=8):

1. Training step (forward + backward + AdamW on the trainable parameters) on the same batch, 4 five-second
   real-speech clips with 40 answer tokens each, two ways:
   * **audio**: ``model(batch)``: log-mel, frozen encoder (no grad), adapter, splice, decoder, answer-only logits;
   * **features**: the clips' cached fp16 frames read with ``load_features`` (inside the timed step), then
     ``forward_from_features``: adapter, splice, decoder, answer-only logits (SpeechLM.forward minus the encoder).
   One warm-up step each, then 10 interleaved rounds (one step each, rotating order) so machine noise hits both alike.
2. Data loading per batch, outside the step: ``load_audio`` of the 4 clips vs ``load_features`` of the 4 cuts.
3. One-off caching cost: ``cache_features`` over real English clips (decode + encoder + fp16 safetensors), as
   seconds and MB per audio hour.
4. Accuracy of the fp16 cache: frame error vs the live fp32 encoder, audio-embedding error, and the loss of the
   same batch both ways.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_infer import (  # noqa: E402 - the sibling benchmark's machine and data helpers
    contention,
    english_asr_rows,
    make_batch,
    round_robin,
    start_run,
    train_batch_data,
)

from speechlm.config import ModelConfig  # noqa: E402
from speechlm.data.audio import load_audio  # noqa: E402
from speechlm.model.features import cache_features, encode_from_features, forward_from_features, load_features  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.tasks import get_task  # noqa: E402
from speechlm.utils import real_data_root, write_json  # noqa: E402

SR = 16000
RESULTS = Path(__file__).resolve().parent / "results"


def write_clips(folder: Path, waves: list[torch.Tensor], texts: list[str]) -> Path:
    """The benchmark clips as float WAV files (bit-exact round trip) and their manifest."""
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (w, t) in enumerate(zip(waves, texts)):
        sf.write(folder / "wav" / f"clip{i}.wav", w.numpy(), SR, subtype="FLOAT")
        lines.append(json.dumps({"id": f"clip{i}", "audio": f"wav/clip{i}.wav", "duration": w.numel() / SR, "text": t}))
    path = folder / "clips.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def caching_manifest(folder: Path, seconds: float) -> tuple[Path, str]:
    """Real English ASR clips of 1-30 s (round robin over sources) adding up to about ``seconds`` of audio."""
    root = real_data_root()
    if root is None:
        rng = np.random.default_rng(0)
        (folder / "noise").mkdir(parents=True, exist_ok=True)
        lines, total, i = [], 0.0, 0
        while total < seconds:
            d = float(rng.uniform(2, 12))
            sf.write(folder / "noise" / f"n{i}.wav", (0.05 * rng.standard_normal(int(d * SR))).astype(np.float32), SR)
            lines.append(json.dumps({"id": f"n{i}", "audio": f"noise/n{i}.wav", "duration": d}))
            total, i = total + d, i + 1
        path = folder / "cache.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return path, "gaussian noise (no shared real data found)"
    rows, total = [], 0.0
    for r in round_robin([r for r in english_asr_rows(root) if 1.0 <= r["duration"] <= 30.0]):
        rows.append({"id": r["id"], "audio": str(root / r["path"]), "duration": r["duration"], "text": r["text"]})
        total += r["duration"]
        if total >= seconds:
            break
    path = folder / "cache.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, f"real English speech from {root}"


class Trainer:
    """One way of computing the loss on the shared model, with its own AdamW."""

    def __init__(self, model, fn):
        self.model, self.fn = model, fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        self.times: list[float] = []

    def step(self) -> float:
        loss_sum, n_tok = self.fn()
        loss = loss_sum / n_tok.clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def timed_step(self) -> None:
        t0 = time.perf_counter()
        self.step()
        self.times.append(time.perf_counter() - t0)


def best_of(fn, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random backbones, 2 steps: a smoke run of the script")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per way (default 10, quick 2)")
    ap.add_argument("--cache-seconds", type=float, default=0, help="audio seconds for the caching-cost run (default 600, quick 30)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 keeps torch's default)")
    ap.add_argument("--out", default="", help="result JSON (default benchmarks/results/features_cpu[_quick].json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    warmup, steps = 1, args.steps or (2 if quick else 10)
    cache_seconds = args.cache_seconds or (30.0 if quick else 600.0)
    out_path = Path(args.out) if args.out else RESULTS / ("features_cpu_quick.json" if quick else "features_cpu.json")
    clock = start_run()
    log, busy, machine = clock.log, clock.busy, clock.machine

    # ---- model ------------------------------------------------------------------------------------
    from speechlm.model.builders import SIZES, build_speechlm

    mcfg = SIZES["tiny"] if quick else ModelConfig()
    log(f"building model (encoder {mcfg.encoder}, llm {mcfg.llm})")
    model = build_speechlm(mcfg)
    model.train()
    init = model.trainable_state_dict()
    task = get_task("asr")
    msg = task.user_message(task.instructions[0], model.audio_token)
    waves, targets, source = train_batch_data(model.tokenizer, model.eos_id, batch=4, seconds=5.0, answer_tokens=40)
    batch = make_batch(model, waves, targets, mcfg.system_prompt, msg)

    work = Path(tempfile.mkdtemp(prefix="bench_features_"))
    clips = write_clips(work, waves, [model.tokenizer.decode(t[:-1]) for t in targets])

    # ---- one-off caching cost ---------------------------------------------------------------------
    cman, csrc = caching_manifest(work, cache_seconds)
    log(f"caching cost: cache_features over {cman.read_text().count(chr(10))} clips of {csrc}")
    t0 = time.perf_counter()
    cache_features(cman, model.encoder, work / "cache_feats", batch_seconds=60.0, workers=0, progress=False)
    cache_wall = time.perf_counter() - t0
    cmeta = json.loads((work / "cache_feats" / "features.json").read_text())
    hours = cmeta["audio_hours"]
    caching = {
        "audio_source": csrc, "cuts": cmeta["cuts"], "audio_seconds": hours * 3600, "mean_clip_s": hours * 3600 / cmeta["cuts"],
        "wall_s": cache_wall,
        "encoder_s": cmeta["run"]["encoder_s"], "decode_and_write_s": cache_wall - cmeta["run"]["encoder_s"],
        "s_per_audio_hour": cache_wall / hours, "encoder_s_per_audio_hour": cmeta["run"]["encoder_s"] / hours,
        "realtime_factor": cache_wall / (hours * 3600), "bytes": cmeta["bytes"], "mb_per_audio_hour": cmeta["bytes"] / hours / 1e6,
        "fp32_mb_per_audio_hour_would_be": 2 * cmeta["bytes"] / hours / 1e6, "fp16": cmeta["fp16"],
        "settings": {"batch_seconds": 60.0, "workers": 0, "shard_seconds": 1800.0},
    }
    log(f"  {hours * 3600:.0f} s of audio in {cache_wall:.1f} s (encoder {cmeta['run']['encoder_s']:.1f} s): "
        f"{caching['s_per_audio_hour']:.0f} s per audio hour, {caching['mb_per_audio_hour']:.0f} MB per audio hour; "
        f"fp16 rel RMS error {cmeta['fp16']['rel_rms_error']:.2e}")

    # ---- the benchmark batch, cached --------------------------------------------------------------
    feats_manifest = cache_features(clips, model.encoder, work / "clip_feats", progress=False)
    cuts = read_manifest(feats_manifest)
    frames = [load_features(c) for c in cuts]

    # ---- accuracy of the fp16 cache ---------------------------------------------------------------
    with torch.no_grad():
        live, lengths = model.encoder(batch.waves)  # [B, F, D] fp32
        frame_err = max(float((live[i, : int(lengths[i])] - f).abs().max()) for i, f in enumerate(frames))
        frame_scale = float(live.abs().max())
        audio, _ = model.encode_audio(batch.waves)
        audio_f, _ = encode_from_features(model, frames)
        loss_a, n_a = model(batch)
        loss_f, n_f = forward_from_features(model, batch, frames)
    accuracy = {
        "frames_max_abs_error": frame_err, "frames_max_abs_value": frame_scale,
        "audio_embedding_max_abs_error": float((audio - audio_f).abs().max()), "audio_embedding_max_abs_value": float(audio.abs().max()),
        "loss_per_token_audio": float(loss_a / n_a), "loss_per_token_features": float(loss_f / n_f),
        "loss_rel_diff": abs(float(loss_a / n_a) - float(loss_f / n_f)) / abs(float(loss_a / n_a)),
        "answer_tokens": int(n_a),
    }
    log(f"fp16 cache accuracy: frames max |err| {frame_err:.2e} (max |x| {frame_scale:.1f}), "
        f"loss {accuracy['loss_per_token_audio']:.5f} (audio) vs {accuracy['loss_per_token_features']:.5f} (features), "
        f"rel diff {accuracy['loss_rel_diff']:.1e}")

    # ---- data loading per batch (outside the step) -------------------------------------------------
    flacs = []  # the corpus stores 16-bit FLAC: time decoding that, not the float WAVs written for exactness
    for i, w in enumerate(batch.waves):
        flacs.append(work / "wav" / f"clip{i}.flac")
        sf.write(flacs[-1], np.clip(w.numpy(), -1, 1), SR, subtype="PCM_16")
    load_audio_s = best_of(lambda: [load_audio(p) for p in flacs])
    load_feats_s = best_of(lambda: [load_features(c) for c in cuts])
    log(f"loading a batch: audio {1e3 * load_audio_s:.1f} ms, features {1e3 * load_feats_s:.2f} ms")

    # ---- training steps ---------------------------------------------------------------------------
    def from_features():
        return forward_from_features(model, batch, [load_features(c) for c in cuts])

    model.load_trainable_state_dict(init)
    trainers = {"audio": Trainer(model, lambda: model(batch)), "features": Trainer(model, from_features)}
    log(f"training: {warmup} warm-up step each, then {steps} interleaved rounds")
    for tr in trainers.values():
        for _ in range(warmup):
            tr.step()
    names = list(trainers)
    for r in range(steps):
        for k in names[r % 2:] + names[: r % 2]:
            trainers[k].timed_step()
        log(f"  round {r + 1}/{steps}: " + "  ".join(f"{k} {trainers[k].times[-1]:.3f}s" for k in names))
    model.load_trainable_state_dict(init)
    b = len(batch.ids)
    audio_s = sum(w.numel() for w in batch.waves) / SR
    train: dict[str, Any] = {}
    for k, tr in trainers.items():
        mean = statistics.fmean(tr.times)
        load = load_audio_s if k == "audio" else 0.0  # the features step already reads its frames
        train[k] = {"step_times_s": [round(x, 4) for x in tr.times], "s_per_step": mean, "s_per_step_median": statistics.median(tr.times),
                    "samples_per_s": b / mean, "audio_s_per_s": audio_s / mean,
                    "samples_per_s_with_loading": b / (mean + load)}
    speedup = train["features"]["samples_per_s"] / train["audio"]["samples_per_s"]
    speedup_median = train["audio"]["s_per_step_median"] / train["features"]["s_per_step_median"]
    speedup_load = train["features"]["samples_per_s_with_loading"] / train["audio"]["samples_per_s_with_loading"]
    # what the encoder costs inside the audio step: its forward alone, on the same batch
    model.eval()
    with torch.no_grad():
        enc_s = best_of(lambda: model.encoder(batch.waves), reps=3)
    model.train()
    log(f"audio {train['audio']['samples_per_s']:.2f} samples/s, features {train['features']['samples_per_s']:.2f} samples/s: "
        f"{speedup:.3f}x ({speedup_load:.3f}x counting in-process audio loading); encoder forward alone {enc_s:.3f} s/batch")

    res: dict[str, Any] = {
        "benchmark": "features_cpu",
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", sys.argv[0], *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine,
        "contention_at_start": busy,
        "config": {"model": dataclasses.asdict(mcfg), "params": model.num_params()},
        "inputs": {"batch": b, "clip_seconds": 5.0, "answer_tokens": 40, "audio_source": source,
                   "instruction": task.instructions[0], "warmup_steps": warmup, "timed_steps": steps},
        "train": {**train, "speedup": speedup, "speedup_median_steps": speedup_median, "speedup_with_loading": speedup_load,
                  "encoder_forward_s_per_batch": enc_s,
                  "method": "shared model (same weights and LoRA), one AdamW per way; after warm-up, interleaved rounds of one "
                            "step each in rotating order. The features step includes reading the 4 cuts' frames (load_features, "
                            "files already open); the audio step starts from decoded waveforms, so samples_per_s_with_loading "
                            "adds the measured in-process load_audio time of the batch to it."},
        "loading": {"audio_batch_s": load_audio_s, "features_batch_s": load_feats_s,
                    "what": "best of 5: load_audio of the 4 clips as 16-bit FLAC (16 kHz, no resampling) vs load_features of the 4 cached cuts"},
        "caching": caching,
        "accuracy": accuracy,
        "contention_at_end": contention(0.5),
        "cpu_steal_pct_run": clock.steal_pct(),
        "wall_s": clock.wall_s(),
    }
    write_json(out_path, res)
    shutil.rmtree(work, ignore_errors=True)
    print_table(res)
    log(f"wrote {out_path}")
    return res


def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 140))
    tr, m = res["train"], res["machine"]
    t = Table(title=f"Training step, batch {res['inputs']['batch']} x {res['inputs']['clip_seconds']:g} s, "
                    f"{res['inputs']['answer_tokens']} answer tokens ({m['cpu_model']}, {m['torch_threads']} threads)")
    for col in ("input", "s/step", "samples/s", "audio s/s", "samples/s incl. loading", "vs audio"):
        t.add_column(col, justify="left" if col == "input" else "right")
    for k in ("audio", "features"):
        r = tr[k]
        t.add_row(k, f"{r['s_per_step']:.3f}", f"{r['samples_per_s']:.2f}", f"{r['audio_s_per_s']:.1f}",
                  f"{r['samples_per_s_with_loading']:.2f}", f"{r['samples_per_s'] / tr['audio']['samples_per_s']:.3f}x")
    con.print(t)
    c, a = res["caching"], res["accuracy"]
    con.print(f"caching: {c['s_per_audio_hour']:.0f} s per audio hour (RTF {c['realtime_factor']:.4f}), {c['mb_per_audio_hour']:.0f} MB "
              f"per audio hour fp16; fp16 frames rel RMS error {c['fp16']['rel_rms_error']:.2e}; loss rel diff {a['loss_rel_diff']:.1e}")


if __name__ == "__main__":
    main()

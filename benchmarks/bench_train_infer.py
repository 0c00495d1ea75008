"""CPU benchmark of SpeechLM training throughput and greedy-decoding speed, against a straightforward baseline.

    python benchmarks/bench_train_infer.py            # full run (~4 min on 2 cores), writes results/train_infer_cpu.json
    python benchmarks/bench_train_infer.py --quick    # smoke run, writes results/train_infer_cpu_quick.json

What it measures, all in one process on the same machine and thread count:

1. Machine matmul peak: best-of fp32 (and bf16) ``torch.mm`` GFLOP/s at 2048^3 and at the LLM's own MLP shape.
2. Training: forward + backward + AdamW step on the real backbones (``ModelConfig()``: Whisper tiny.en, stack
   adapter k=8, SmolLM2-135M-Instruct with LoRA r=8 on q,k,v,o), batch of 4 five-second real-speech clips with
   40 answer tokens each. Reports s/step, samples/s, audio-s/s, peak RSS, analytic FLOPs/step and MFU.
3. Baseline in the same run, as a straightforward speech-LLM class would do it (Ultravox-style): encoder on
   30-s padded input, the chat template's default system prompt, full logits over the whole sequence with the
   standard Hugging Face loss. Same batch, same weights, same LoRA. Plus each of our three levers applied alone
   to the baseline (ablation).
4. Inference: real-time factor of greedy decoding with ``Transcriber`` on 8 real 3-8 s clips (batch 8 and 1),
   and of Whisper tiny.en's own decoder (``WhisperBaseline``) on the same clips.

Without ``--checkpoint`` the adapter is untrained, so the SpeechLM rarely emits end-of-turn and decodes the
full ``max_new_tokens``: that greedy RTF is an upper bound (the decode-step count is recorded). The run also
times decoding stopped at each batch's reference-transcript length (what a trained model that stops costs).
Training variants are timed in interleaved rounds, so a slow patch of a shared machine hits all alike.

The GPU mode (one configuration's training step on a GPU: samples/s, MFU, peak memory) is its own script,
``benchmarks/bench_train_gpu.py``; it reuses this file's data, step shapes and FLOP count (``analytic_flops``).
See benchmarks/README.md for the latest numbers and what limits them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from speechlm.config import ModelConfig
from speechlm.model.speechlm import Batch, PromptFormatter, SpeechLM
from speechlm.tasks import get_task
from speechlm.utils import real_data_root, write_json

SR = 16000
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_TRAIN_SAMPLES_PER_S = 4.0
TARGET_GREEDY_RTF = 0.1
GPU_POINTER = "GPU mode (samples/s, MFU, peak memory on --device cuda): python benchmarks/bench_train_gpu.py --help"


# --------------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if flags and model != "unknown":
                break
    mem_gb = None
    with contextlib.suppress(Exception):
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    bf16_native = None
    with contextlib.suppress(Exception):
        bf16_native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    import transformers

    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "simd": sorted(f for f in flags if f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_bf16_supported": bf16_native,
    }


def contention(seconds: float = 1.0) -> dict[str, Any]:
    """CPU used by other processes right now: torch's threads degrade badly when cores are shared."""
    try:
        import psutil
    except ImportError:
        return {"checked": False}
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid != os.getpid()]
    for p in procs:
        with contextlib.suppress(Exception):
            p.cpu_percent(None)
    total = psutil.cpu_percent(interval=seconds)
    busy = []
    for p in procs:
        with contextlib.suppress(Exception):
            pct = p.cpu_percent(None)
            if pct >= 10:
                busy.append({"pid": p.pid, "cpu_pct": round(pct), "cmd": " ".join(p.info["cmdline"] or [p.info["name"]])[:100]})
    return {"checked": True, "system_cpu_pct_before": total, "busy_processes": busy}


class PeakRSS:
    """Peak resident memory of this process over a section (Linux: VmHWM reset via clear_refs)."""

    def __init__(self) -> None:
        self.resettable = False
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = self._hwm() is not None

    @staticmethod
    def _hwm() -> float | None:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # MiB
        return None

    def reset(self) -> None:
        if self.resettable:
            Path("/proc/self/clear_refs").write_text("5")

    def read_mib(self) -> float:
        if self.resettable:
            return round(self._hwm(), 1)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # lifetime peak (kB on Linux)


# --------------------------------------------------------------------------------------------------
# matmul peak
# --------------------------------------------------------------------------------------------------
def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def mm_gflops(m: int, k: int, n: int, dtype: torch.dtype, reps: int, budget_s: float = 6.0) -> dict[str, Any]:
    """Best-of GFLOP/s of ``torch.mm`` [m,k] @ [k,n]; each timing repeats the product enough to last >= 20 ms."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    t0 = time.perf_counter()
    torch.mm(a, b)  # warm-up (and a first estimate of the cost)
    one = time.perf_counter() - t0
    inner = max(1, int(0.02 / max(one, 1e-6)))
    best, start = math.inf, time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / inner)
        if time.perf_counter() - start > budget_s:
            break
    return {"shape": f"{m}x{k} @ {k}x{n}", "dtype": str(dtype).replace("torch.", ""), "best_s": best,
            "gflops": round(2 * m * k * n / best / 1e9, 1)}


def matmul_peak(llm_tokens: int, hidden: int, inter: int, quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 8
    out: dict[str, Any] = {"fp32_2048": mm_gflops(2048, 2048, 2048, torch.float32, reps),
                           "fp32_llm_mlp": mm_gflops(llm_tokens, hidden, inter, torch.float32, reps * 3)}
    try:  # bf16 on CPUs without AVX512-BF16/AMX has no fast kernels (0.3 GFLOP/s at 2048^3 seen): probe small first
        out["bf16_512"] = mm_gflops(512, 512, 512, torch.bfloat16, 3, budget_s=3.0)
        out["bf16_llm_mlp"] = mm_gflops(llm_tokens, hidden, inter, torch.bfloat16, 3, budget_s=3.0)
        if out["bf16_512"]["gflops"] > 20:
            out["bf16_2048"] = mm_gflops(2048, 2048, 2048, torch.bfloat16, reps, budget_s=4.0)
    except Exception as e:  # noqa: BLE001 - any failure is itself the result
        out["bf16_error"] = f"{type(e).__name__}: {e}"
    x = torch.ones(64 * 2**20)  # 256 MiB: far larger than the caches
    best = min(time_call(x.sum)[0] for _ in range(5))
    out["mem_read_gbps"] = round(x.numel() * 4 / best / 1e9, 1)
    del x
    out["peak_fp32_gflops"] = max(out["fp32_2048"]["gflops"], out["fp32_llm_mlp"]["gflops"])
    return out


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def english_asr_rows(root: Path) -> list[dict]:
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "asr" in r.get("tasks", []) and r.get("language") == "en" and r.get("text")]
    return sorted(rows, key=lambda r: r["id"])


def round_robin(rows: list[dict]) -> list[dict]:
    """Rows reordered to alternate between sources (id prefix), for varied speakers, lengths and texts."""
    by_src: dict[str, list[dict]] = {}
    for r in rows:
        by_src.setdefault("/".join(r["id"].split("/")[:2]), []).append(r)
    queues = [by_src[k] for k in sorted(by_src)]
    out: list[dict] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def load_wave(root: Path, row: dict) -> np.ndarray:
    from speechlm.data.audio import load_audio

    return load_audio(root / row["path"], sample_rate=SR)


def train_batch_data(tokenizer, eos_id: int, batch: int, seconds: float, answer_tokens: int,
                     real: bool = True) -> tuple[list[torch.Tensor], list[list[int]], str]:
    """``batch`` clips of exactly ``seconds`` s (real speech concatenated/cropped, else noise) and answers of
    exactly ``answer_tokens`` tokens (their transcripts' tokens, cropped, then end-of-turn). ``real=False``: noise
    and a fixed text whatever is on disk (same shapes, so the same work)."""
    root = real_data_root() if real else None
    n = int(seconds * SR)
    waves, targets = [], []
    if root is not None:
        it = iter(round_robin([r for r in english_asr_rows(root) if r["duration"] >= 1.0]))
        for _ in range(batch):
            parts, text = [], []
            while sum(len(p) for p in parts) < n or len(tokenizer(" ".join(text), add_special_tokens=False).input_ids) < answer_tokens:
                r = next(it)
                parts.append(load_wave(root, r))
                text.append(r["text"].lower())
            waves.append(torch.from_numpy(np.concatenate(parts)[:n].astype(np.float32)))
            targets.append(tokenizer(" ".join(text), add_special_tokens=False).input_ids[: answer_tokens - 1] + [eos_id])
        return waves, targets, f"real speech from {root} (concatenated, cropped to {seconds:g} s)"
    g = torch.Generator().manual_seed(0)
    text = "the quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly " * 4
    ids = tokenizer(text, add_special_tokens=False).input_ids[: answer_tokens - 1] + [eos_id]
    for _ in range(batch):
        waves.append(0.05 * torch.randn(n, generator=g))
        targets.append(list(ids))
    return waves, targets, "gaussian noise (no shared real data found)"


def infer_clips(count: int, lo: float = 3.0, hi: float = 8.0) -> tuple[list[np.ndarray], list[dict], str]:
    root = real_data_root()
    if root is None:
        rng = np.random.default_rng(0)
        durs = np.linspace(lo, hi, count)
        return [0.05 * rng.standard_normal(int(d * SR)).astype(np.float32) for d in durs], \
            [{"id": f"noise{i}", "duration": float(d), "text": ""} for i, d in enumerate(durs)], "gaussian noise"
    picked = round_robin([r for r in english_asr_rows(root) if lo <= r["duration"] <= hi])[:count]
    return [load_wave(root, r) for r in picked], picked, f"real speech from {root}"


# --------------------------------------------------------------------------------------------------
# training variants
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    pad_30s: bool
    """Encoder on 30-s padded input (Whisper's own setup) instead of the real length."""
    system_prompt: str
    """"" empty system turn (ours); "default" the chat template's own (~16 more tokens for SmolLM2)."""
    logits: str
    """"answer": LM head only at answer positions (SpeechLM.forward); "full": HF loss over full logits."""


def baseline_loss(model: SpeechLM, batch: Batch) -> torch.Tensor:
    """What a straightforward speech-LLM class does: splice, then the causal LM with ``labels`` (logits at every
    position, mean cross-entropy inside Hugging Face's loss)."""
    audio, audio_lengths = model.encode_audio(batch.waves)  # [B, A, H], [B]
    emb, mask, labels = model.splice(batch, audio, audio_lengths)  # [B, L, H], [B, L], [B, L]
    return model.causal_lm(inputs_embeds=emb, attention_mask=mask, labels=labels).loss


def step_loss(model: SpeechLM, batch: Batch, v: Variant) -> torch.Tensor:
    if v.logits == "answer":
        loss_sum, n_tok = model(batch)
        return loss_sum / n_tok.clamp(min=1)
    return baseline_loss(model, batch)


def make_batch(model: SpeechLM, waves, targets, system_prompt: str, instruction_msg: str) -> Batch:
    fmt = PromptFormatter(model.tokenizer, model.audio_token, system_prompt)
    prompt = fmt.prompt_ids(instruction_msg)
    return Batch(ids=[f"clip{i}" for i in range(len(waves))], waves=list(waves), prompts=[prompt] * len(waves),
                 targets=[list(t) for t in targets])


def shapes(model: SpeechLM, batch: Batch, v: Variant) -> dict[str, Any]:
    """The sizes each part of the step actually runs on (padding included)."""
    from speechlm.model.encoder import HOP

    mel_real = [w.numel() // HOP for w in batch.waves]
    if v.pad_30s:
        t_run = 2 * model.encoder.max_frames
    else:
        t_run = max(mel_real) + max(mel_real) % 2
    f_run = (t_run + 1) // 2
    f_real = [(t + 1) // 2 for t in mel_real]
    f_adapter = max(f_real) if v.pad_30s else f_run  # the padded-30-s output is cut back to the real frames
    k = getattr(model.adapter, "k", 1)
    a_tokens = [int(x) for x in model.adapter.out_lengths(torch.tensor(f_real))]
    seq = [len(p.before) + a + len(p.after) + len(t) for p, a, t in zip(batch.prompts, a_tokens, batch.targets)]
    answers = sum(len(t) for t in batch.targets)
    l_max = max(seq)
    return {"batch": len(batch.waves), "mel_frames_run": t_run, "encoder_frames_run": f_run, "encoder_frames_real": max(f_real),
            "adapter_tokens_run": math.ceil(f_adapter / k), "audio_tokens": max(a_tokens), "prompt_tokens": len(batch.prompts[0].before) + len(batch.prompts[0].after),
            "seq_len": l_max, "answer_tokens": answers,
            "logit_positions": answers if v.logits == "answer" else len(batch.waves) * l_max}


def analytic_flops(model: SpeechLM, s: dict[str, Any]) -> dict[str, float]:
    """FLOPs of one training step (forward + backward), matmuls and convolutions only (norms, softmax,
    activations and the optimizer are O(params) or O(tokens x width) and ignored).

    Frozen base weights need no weight gradients, so their backward costs one activation-gradient matmul
    (~1x forward); attention score/value products cost 2x forward in backward; trainable LoRA and adapter
    weights cost 2x (weight + input gradients). The frozen encoder runs under no_grad: forward only.
    Attention is counted over the full padded square (masked, not skipped)."""
    b = s["batch"]
    # encoder (Whisper): mel filterbank and conv stem on mel frames, then layers on encoder frames
    ec = model.encoder.encoder.config
    d, ffn, mels = ec.d_model, ec.encoder_ffn_dim, ec.num_mel_bins
    t, f = s["mel_frames_run"], s["encoder_frames_run"]
    n_fft_bins = model.encoder.filters.shape[1]
    enc = b * (2 * mels * n_fft_bins * t + 2 * mels * 3 * d * t + 2 * d * 3 * d * f
               + ec.encoder_layers * 2 * (4 * d * d + 2 * d * ffn) * f)
    enc_attn = b * ec.encoder_layers * 4 * d * f * f
    # adapter: every linear needs its input gradient too (the LayerNorm in front of the stack adapter is trained)
    lin = [m for m in model.adapter.modules() if isinstance(m, torch.nn.Linear)]
    n_ad = b * s["adapter_tokens_run"]
    ad_f = sum(2 * m.in_features * m.out_features * n_ad for m in lin)
    if not lin or any(isinstance(m, torch.nn.Conv1d) for m in model.adapter.modules()):  # conv adapter: rough
        ad_f = 2 * sum(p.numel() for p in model.adapter.parameters() if p.dim() > 1) * n_ad
    ad_b = 2 * ad_f
    # LLM
    c = model.causal_lm.config
    h, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    nh, nkv = c.num_attention_heads, c.num_key_value_heads
    hd = getattr(c, "head_dim", None) or h // nh
    per_layer = h * nh * hd + 2 * h * nkv * hd + nh * hd * h + 3 * h * inter
    tok = b * s["seq_len"]
    lin_f = 2 * layers * per_layer * tok
    attn_f = b * layers * 4 * nh * hd * s["seq_len"] ** 2  # QK^T and AV over the padded, masked square
    lora_params = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    lora_f = 2 * lora_params * tok
    head_f = 2 * h * c.vocab_size * s["logit_positions"]
    parts = {
        "encoder_fwd": enc, "encoder_attention_fwd": enc_attn, "adapter_fwd": ad_f, "adapter_bwd": ad_b,
        "llm_linear_fwd": lin_f, "llm_linear_bwd": lin_f, "llm_attention_fwd": attn_f, "llm_attention_bwd": 2 * attn_f,
        "lora_fwd": lora_f, "lora_bwd": 2 * lora_f, "lm_head_fwd": head_f, "lm_head_bwd": head_f,
    }
    parts["total"] = sum(parts.values())
    parts["total_without_attention"] = parts["total"] - enc_attn - attn_f - 2 * attn_f
    return parts


def counted_flops(fn: Callable[[], Any]) -> float | None:
    """FLOPs torch's FlopCounterMode sees in one call. On CPU it counts mm/addmm/bmm/conv but not the CPU
    flash-attention kernel, so compare it with ``total_without_attention``."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def cpu_ticks() -> tuple[int, int] | None:
    """(total, steal) jiffies from /proc/stat: steal is time the hypervisor gave this VM's CPUs to someone else."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f[:8]), f[7]
    return None


@dataclass
class RunClock:
    """What every benchmark records around its measurements: a clock for log lines, the machine, how busy the
    CPU was at the start, and the CPU steal over the run (a shared host hides a slow run otherwise)."""

    t_start: float
    ticks0: tuple[int, int] | None
    busy: dict[str, Any]
    machine: dict[str, Any]

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t_start:6.1f}s] {msg}", flush=True)

    def steal_pct(self) -> float | None:
        t1 = cpu_ticks()
        return round(100 * (t1[1] - self.ticks0[1]) / max(1, t1[0] - self.ticks0[0]), 2) if t1 and self.ticks0 else None

    def wall_s(self) -> float:
        return time.perf_counter() - self.t_start


def start_run() -> RunClock:
    """Seed torch, read the CPU counters, warn if other processes use the CPU, describe the machine."""
    clock = RunClock(time.perf_counter(), None, {}, {})
    torch.manual_seed(0)
    clock.ticks0 = cpu_ticks()
    clock.busy = contention()
    if clock.busy.get("busy_processes"):
        clock.log(f"WARNING: other processes are using the CPU, timings will be low: {clock.busy['busy_processes']}")
    clock.machine = cpu_info()
    return clock


class Trainer:
    """One variant's training step on the shared model (same weights, same LoRA), with its own optimizer."""

    def __init__(self, model: SpeechLM, batch: Batch, v: Variant):
        self.model, self.batch, self.v = model, batch, v
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        self.times: list[float] = []
        self.rss: list[float] = []
        self.ticks = [0, 0]

    def step(self) -> float:
        self.model.encoder.pad_to_30s = self.v.pad_30s
        loss = step_loss(self.model, self.batch, self.v)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def timed_step(self, rss: PeakRSS) -> None:
        rss.reset()
        c0 = cpu_ticks()
        t0 = time.perf_counter()
        self.step()
        self.times.append(time.perf_counter() - t0)
        c1 = cpu_ticks()
        self.rss.append(rss.read_mib())
        if c0 and c1:
            self.ticks[0] += c1[0] - c0[0]
            self.ticks[1] += c1[1] - c0[1]


def train_interleaved(model: SpeechLM, batches: dict[str, Batch], variants: dict[str, Variant], init: dict, warmup: int,
                      steps: int, peak_flops: float, rss: PeakRSS, count: tuple[str, ...], log: Callable[[str], None]) -> dict[str, Any]:
    """Time every variant in interleaved rounds (one step each, the order rotating every round), so a slow patch
    of the machine (shared host, CPU steal) hits all variants alike and the ratios stay fair."""
    model.load_trainable_state_dict(init)
    model.train()
    trainers = {k: Trainer(model, batches[k], v) for k, v in variants.items()}
    for tr in trainers.values():
        for _ in range(warmup):
            tr.step()
    names = list(trainers)
    for r in range(steps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            trainers[k].timed_step(rss)
        log(f"  round {r + 1}/{steps}: " + "  ".join(f"{k.split(' + ')[-1]} {trainers[k].times[-1]:.2f}s" for k in names))
    out: dict[str, Any] = {}
    for k, tr in trainers.items():
        v, batch, times = tr.v, tr.batch, tr.times
        s = shapes(model, batch, v)
        fl = analytic_flops(model, s)
        mean = sum(times) / len(times)
        b = len(batch.waves)
        audio_s = sum(w.numel() for w in batch.waves) / SR
        out[k] = {
            "variant": v.__dict__, "shapes": s, "warmup_steps": warmup, "timed_steps": len(times),
            "step_times_s": [round(x, 4) for x in times], "s_per_step": mean, "s_per_step_median": statistics.median(times),
            "s_per_step_min": min(times), "samples_per_s": b / mean, "audio_s_per_s": audio_s / mean,
            "peak_rss_mib": max(tr.rss), "cpu_steal_pct": round(100 * tr.ticks[1] / tr.ticks[0], 2) if tr.ticks[0] else None,
            "flops_per_step": fl, "gflops_per_step": fl["total"] / 1e9, "achieved_gflops": fl["total"] / mean / 1e9,
            "hfu": fl["total"] / mean / peak_flops,
        }
        if k in count:
            out[k]["flop_counter_per_step"] = counted_flops(tr.step)
        log(f"  {k:<34} {mean:.3f} s/step (median {out[k]['s_per_step_median']:.3f})  {out[k]['samples_per_s']:.2f} samples/s  "
            f"{out[k]['gflops_per_step']:.0f} GFLOP/step  peak RSS {out[k]['peak_rss_mib']:.0f} MiB  steal {out[k]['cpu_steal_pct']}%")
    model.load_trainable_state_dict(init)
    return out


# --------------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def record_generate(module: torch.nn.Module, sink: list[int]):
    """Record the length of what each ``module.generate`` call returns (decode steps; Whisper's also holds its
    few start tokens), by shadowing the method on the instance: the package is not touched."""
    orig = module.generate

    def wrapped(*args, **kwargs):
        out = orig(*args, **kwargs)
        seqs = out.sequences if hasattr(out, "sequences") else out
        sink.append(int(seqs.shape[1]))
        return out

    module.generate = wrapped
    try:
        yield sink
    finally:
        del module.generate  # back to the class method


def bench_inference(model: SpeechLM, clips: list[np.ndarray], meta: list[dict], max_new_tokens: int, batch_sizes: list[int],
                    rss: PeakRSS, log: Callable[[str], None]) -> dict[str, Any]:
    from speechlm.inference.transcribe import Transcriber, WhisperBaseline
    from speechlm.evaluation.metrics import wer_details

    audio_s = sum(len(c) for c in clips) / SR
    refs = [m.get("text", "") for m in meta]
    model.encoder.pad_to_30s = False
    model.eval()
    task = get_task("asr")
    tr = Transcriber(model, task, max_new_tokens=max_new_tokens, batch_size=max(batch_sizes))
    out: dict[str, Any] = {"clips": [{"id": m["id"], "duration": m["duration"]} for m in meta], "audio_seconds": audio_s,
                           "max_new_tokens": max_new_tokens, "whisper": {"what": "Whisper tiny.en's own decoder, 30-s padded input"}}
    tr.max_new_tokens = 4
    tr(clips[:1])  # warm-up
    # Reference length: tokens a model that has learned the task would emit (the transcript, then end-of-turn).
    ref_tokens = [len(model.target_ids(t)) for t in refs] if all(refs) else [max_new_tokens] * len(clips)
    out["reference_tokens"] = ref_tokens
    order = sorted(range(len(clips)), key=lambda i: -len(clips[i]))  # Transcriber's own batching order

    def run(bs: int, cap: Callable[[list[int]], int]) -> tuple[float, list[str], list[int]]:
        """Decode in Transcriber's batches of ``bs``, each with max_new_tokens = cap(its clip indices)."""
        tr.batch_size = bs
        texts: list[str] = [""] * len(clips)
        steps: list[int] = []
        wall = 0.0
        with record_generate(model.causal_lm, steps):
            for s0 in range(0, len(order), bs):
                idx = order[s0:s0 + bs]
                tr.max_new_tokens = cap(idx)
                dt_, got = time_call(lambda: tr([clips[i] for i in idx]))
                wall += dt_
                for i, t in zip(idx, got):
                    texts[i] = t
        return wall, texts, steps

    modes = {
        "speechlm": ("as is, untrained adapter unless --checkpoint (runs to the cap when it does not stop)", lambda idx: max_new_tokens),
        "speechlm_reflen": ("stopped at each batch's longest reference transcript + end-of-turn: the decode work of a "
                            "model that has learned to transcribe and stop", lambda idx: min(max_new_tokens, max(ref_tokens[i] for i in idx))),
    }
    for key, (what, cap) in modes.items():
        out[key] = {"what": what}
        for bs in batch_sizes:
            rss.reset()
            wall, texts, steps = run(bs, cap)
            r = {"batch_size": bs, "wall_s": wall, "rtf": wall / audio_s, "decode_steps_per_call": steps,
                 "peak_rss_mib": rss.read_mib(), "texts": [t[:80] for t in texts]}
            if any(refs):
                r["wer_vs_reference"] = wer_details(refs, texts)["wer"]
            out[key][f"batch{bs}"] = r
            log(f"  {key} greedy batch {bs}: {wall:.2f} s for {audio_s:.1f} s audio, RTF {r['rtf']:.3f}, decode steps {steps}")
    # encoder + adapter + prefill + one token: what is not per-token decode
    wall, _, _ = run(max(batch_sizes), lambda idx: 1)
    out["speechlm_first_token"] = {"batch_size": max(batch_sizes), "wall_s": wall, "rtf": wall / audio_s}
    log(f"  speechlm first token only (encoder + prefill), batch {max(batch_sizes)}: {wall:.2f} s")
    tr.max_new_tokens = max_new_tokens

    wb = WhisperBaseline(batch_size=max(batch_sizes))
    wb(clips[:1])  # warm-up
    for bs in batch_sizes:
        wb.batch_size = bs
        steps = []
        rss.reset()
        with record_generate(wb.bundle.model, steps):
            wall, texts = time_call(lambda: wb(clips))
        r = {"batch_size": bs, "wall_s": wall, "rtf": wall / audio_s, "tokens_per_call": steps,
             "peak_rss_mib": rss.read_mib(), "texts": [t[:80] for t in texts]}
        if any(refs):
            r["wer_vs_reference"] = wer_details(refs, texts)["wer"]
        out["whisper"][f"batch{bs}"] = r
        log(f"  whisper tiny.en greedy batch {bs}: {wall:.2f} s, RTF {r['rtf']:.3f}")
    return out


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def print_tables(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 180))
    m, pk = res["machine"], res["matmul_peak"]
    t = Table(title=f"Machine: {m['cpu_model']}, {m['logical_cores']} cores, torch {m['torch']}, {m['torch_threads']} threads, SIMD {' '.join(m['simd'])}")
    t.add_column("matmul"); t.add_column("dtype"); t.add_column("GFLOP/s", justify="right")
    for key in ("fp32_2048", "fp32_llm_mlp", "bf16_512", "bf16_2048", "bf16_llm_mlp"):
        if key in pk:
            t.add_row(pk[key]["shape"], pk[key]["dtype"], f"{pk[key]['gflops']:.1f}")
    t.add_row("memory read (sum of 256 MiB)", "float32", f"{pk['mem_read_gbps']:.1f} GB/s")
    con.print(t)

    tr = res["train"]
    base = tr["variants"]["baseline"]["samples_per_s"]
    t = Table(title=f"Training step (batch {res['inputs']['batch']} x {res['inputs']['clip_seconds']:g} s, "
                    f"{res['inputs']['answer_tokens']} answer tokens, AdamW), peak fp32 {pk['peak_fp32_gflops']:.0f} GFLOP/s")
    for col in ("variant", "seq len", "enc frames", "logit pos", "s/step", "samples/s", "audio s/s", "GFLOP/step", "GFLOP/s", "HFU", "MFU", "peak RSS MiB", "vs baseline"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    ours_flops = tr["variants"]["ours"]["flops_per_step"]["total"]
    for name, r in tr["variants"].items():
        s = r["shapes"]
        mfu = ours_flops / r["s_per_step"] / (pk["peak_fp32_gflops"] * 1e9)
        t.add_row(name, str(s["seq_len"]), str(s["encoder_frames_run"]), str(s["logit_positions"]), f"{r['s_per_step']:.3f}",
                  f"{r['samples_per_s']:.2f}", f"{r['audio_s_per_s']:.1f}", f"{r['gflops_per_step']:.0f}", f"{r['achieved_gflops']:.0f}",
                  f"{100 * r['hfu']:.0f}%", f"{100 * mfu:.0f}%", f"{r['peak_rss_mib']:.0f}", f"{r['samples_per_s'] / base:.2f}x")
    con.print(t)

    inf = res["infer"]
    t = Table(title=f"Greedy decoding, {len(inf['clips'])} clips, {inf['audio_seconds']:.1f} s audio, max_new_tokens {inf['max_new_tokens']}; "
                    f"LLM weights {inf['llm_weight_mib']:.0f} MiB at {pk['mem_read_gbps']:.0f} GB/s = {inf['decode_step_floor_ms']:.0f} ms/step floor")
    for col in ("system", "batch", "wall s", "RTF", "decode steps / call", "WER vs ref"):
        t.add_column(col, justify="left" if col == "system" else "right")
    trained = "trained" if res["config"]["checkpoint"] else "untrained adapter, to the cap"
    rows = ((f"SpeechLM as is ({trained})", "speechlm"), ("SpeechLM, stop at reference length", "speechlm_reflen"),
            ("Whisper tiny.en own decoder", "whisper"))
    for sysname, key in rows:
        for name, r in inf[key].items():
            if not name.startswith("batch"):
                continue
            steps = r.get("decode_steps_per_call") or r.get("tokens_per_call")
            wer = f"{100 * r['wer_vs_reference']:.0f}%" if "wer_vs_reference" in r else "-"
            t.add_row(sysname, str(r["batch_size"]), f"{r['wall_s']:.2f}", f"{r['rtf']:.3f}", ",".join(map(str, steps)), wer)
    ft = inf["speechlm_first_token"]
    t.add_row("SpeechLM, first token only (encoder+prefill)", str(ft["batch_size"]), f"{ft['wall_s']:.2f}", f"{ft['rtf']:.3f}", "1", "-")
    con.print(t)

    t = Table(title="Targets")
    for col in ("target", "goal", "measured", "met"):
        t.add_column(col)
    for name, g in res["targets"].items():
        t.add_row(name, g["goal"], f"{g['value']:.3f}", "[green]yes[/]" if g["met"] else "[red]no[/]")
    con.print(t)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--device" or a.startswith("--device=") for a in args_in):  # before parsing: its options are not ours
        print(f"the GPU mode (--device) moved to its own script: python benchmarks/bench_train_gpu.py {shlex.join(args_in)}",
              file=sys.stderr)
        raise SystemExit(2)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=GPU_POINTER)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer steps, 4 clips, 16 new tokens; writes *_quick.json")
    ap.add_argument("--out", default="", help="result JSON (default benchmarks/results/train_infer_cpu[_quick].json)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 keeps torch's default)")
    ap.add_argument("--checkpoint", default="", help="trained checkpoint folder: realistic decode lengths for the RTF")
    ap.add_argument("--steps", type=int, default=0, help="timed training steps per variant (default 8, quick 2)")
    ap.add_argument("--size", default="smol", choices=["smol", "tiny"], help="model size (tiny: random backbones, to test the script)")
    ap.add_argument("--no-ablation", action="store_true", help="skip the one-lever-at-a-time variants")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    warmup, steps = (1, args.steps or 2) if quick else (2, args.steps or 8)
    n_clips, max_new = (4, 16) if quick else (8, 64)
    out_path = Path(args.out) if args.out else RESULTS / ("train_infer_cpu_quick.json" if quick else "train_infer_cpu.json")
    clock = start_run()
    log, busy, machine = clock.log, clock.busy, clock.machine
    rss = PeakRSS()

    # ---- model and inputs -------------------------------------------------------------------------
    log("building model")
    if args.checkpoint:
        from speechlm.checkpoint import load_checkpoint

        model, rcfg, _ = load_checkpoint(args.checkpoint)
        mcfg = rcfg.model
    else:
        from speechlm.model.builders import SIZES, build_speechlm

        mcfg = ModelConfig() if args.size == "smol" else SIZES[args.size]
        model = build_speechlm(mcfg)
    init = model.trainable_state_dict()
    task = get_task("asr")
    msg = task.user_message(task.instructions[0], model.audio_token)
    waves, targets, source = train_batch_data(model.tokenizer, model.eos_id, batch=4, seconds=5.0, answer_tokens=40)
    variants = {
        "ours": Variant("ours", pad_30s=False, system_prompt=mcfg.system_prompt, logits="answer"),
        "baseline": Variant("baseline", pad_30s=True, system_prompt="default", logits="full"),
    }
    if not args.no_ablation:
        variants["baseline + real-length encoder"] = Variant("baseline + real-length encoder", False, "default", "full")
        variants["baseline + answer-only logits"] = Variant("baseline + answer-only logits", True, "default", "answer")
        variants["baseline + empty system turn"] = Variant("baseline + empty system turn", True, mcfg.system_prompt, "full")
    batches = {k: make_batch(model, waves, targets, v.system_prompt, msg) for k, v in variants.items()}

    # the answer-only loss must equal the standard HF loss over full logits (same prompt, same encoder)
    model.encoder.pad_to_30s = False
    with torch.no_grad():
        ls, n = model(batches["ours"])
        check = {"ours_answer_only": float(ls / n), "hf_full_logits": float(baseline_loss(model, batches["ours"]))}
    check["abs_diff"] = abs(check["ours_answer_only"] - check["hf_full_logits"])
    log(f"loss check (answer-only vs HF full logits): {check}")

    # ---- peak -----------------------------------------------------------------------------------------
    c = model.causal_lm.config
    llm_tokens = shapes(model, batches["ours"], variants["ours"])["seq_len"] * len(waves)
    log("measuring matmul peak")
    peak = matmul_peak(llm_tokens, c.hidden_size, c.intermediate_size, quick)
    log(f"  fp32 2048^3: {peak['fp32_2048']['gflops']} GFLOP/s; fp32 {peak['fp32_llm_mlp']['shape']}: {peak['fp32_llm_mlp']['gflops']} GFLOP/s; "
        f"bf16 512^3: {peak.get('bf16_512', {}).get('gflops')} GFLOP/s")
    peak_flops = peak["peak_fp32_gflops"] * 1e9

    # ---- training -----------------------------------------------------------------------------------
    log(f"training: warm-up {warmup} steps each, then {steps} interleaved rounds of one step per variant")
    train_res = train_interleaved(model, batches, variants, init, warmup, steps, peak_flops, rss, ("ours", "baseline"), log)
    ours, base = train_res["ours"], train_res["baseline"]
    mfu = ours["flops_per_step"]["total"] / ours["s_per_step"] / peak_flops
    model.load_trainable_state_dict(init)

    # ---- inference -----------------------------------------------------------------------------------
    clips, meta, clip_src = infer_clips(n_clips)
    log(f"inference on {len(clips)} clips ({sum(len(x) for x in clips) / SR:.1f} s)")
    big = len(clips)
    infer = bench_inference(model, clips, meta, max_new, [big, 1], rss, log)
    infer["source"] = clip_src
    weight_bytes = sum(p.numel() * p.element_size() for p in model.llm.parameters())
    infer["llm_weight_mib"] = weight_bytes / 2**20
    infer["decode_step_floor_ms"] = weight_bytes / (peak["mem_read_gbps"] * 1e9) * 1e3  # every weight read once per step
    rtf = {f"{k}_batch{bs}": infer[k][f"batch{bs}"]["rtf"] for k in ("speechlm_reflen", "speechlm") for bs in (big, 1)}
    res: dict[str, Any] = {
        "benchmark": "train_infer_cpu",
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", sys.argv[0], *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine,
        "contention_at_start": busy,
        "config": {"model": dataclasses.asdict(mcfg),
                   "checkpoint": args.checkpoint or None, "params": model.num_params()},
        "inputs": {"batch": len(waves), "clip_seconds": 5.0, "answer_tokens": 40, "audio_source": source,
                   "instruction": task.instructions[0]},
        "loss_check": check,
        "matmul_peak": peak,
        "train": {
            "variants": train_res,
            "ours_mfu": mfu,
            "speedup_vs_baseline": ours["samples_per_s"] / base["samples_per_s"],
            "method": "all variants share one model (same weights and LoRA), each with its own AdamW; after warm-up they are "
                      "timed in interleaved rounds (one step each, rotating order) so machine noise hits all alike",
            "notes": "hfu = analytic FLOPs the variant executes / time / measured fp32 peak; mfu (table) = ours' FLOPs "
                     "(the useful work) / time / peak. flop_counter_per_step excludes CPU SDPA attention "
                     "(compare with flops_per_step.total_without_attention).",
        },
        "infer": infer,
        "targets": {
            "train_samples_per_s": {"goal": f">= {TARGET_TRAIN_SAMPLES_PER_S}", "value": ours["samples_per_s"],
                                    "met": ours["samples_per_s"] >= TARGET_TRAIN_SAMPLES_PER_S},
            **{f"greedy_rtf_{k}": {"goal": f"<= {TARGET_GREEDY_RTF}", "value": v, "met": v <= TARGET_GREEDY_RTF} for k, v in rtf.items()},
        },
        "targets_note": "greedy_rtf_speechlm_reflen_* stops decoding at the reference transcript's length (what a trained "
                        "model that emits end-of-turn costs); greedy_rtf_speechlm_* is the model as loaded (without --checkpoint "
                        "the adapter is untrained and decodes to max_new_tokens: a worst case).",
        "contention_at_end": contention(0.5),
        "cpu_steal_pct_run": clock.steal_pct(),
        "wall_s": clock.wall_s(),
    }
    write_json(out_path, res)
    print_tables(res)
    log(f"wrote {out_path}")
    return res


if __name__ == "__main__":
    main()

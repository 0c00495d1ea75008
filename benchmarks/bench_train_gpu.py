"""One SpeechLM training-step configuration on a GPU: samples/s, MFU against the GPU's bf16 peak, peak memory.

    python benchmarks/bench_train_gpu.py --batch 64                          # fp32 weights, the package default
    python benchmarks/bench_train_gpu.py --batch 64 --dtype bfloat16 --autocast --compile
    python benchmarks/bench_train_gpu.py --random-llm-config llama-3.2-3b --dtype bfloat16 --autocast
    python benchmarks/bench_train_gpu.py --device cpu --smoke --out /tmp/x.json   # the same code on a CPU, tiny (tests)
    bash benchmarks/gpu_check.sh                                                # the set of GPU runs in one go

It times the "ours" training step of ``bench_train_infer.py`` (real-length encoder, empty system turn, answer-only
logits; then backward, gradient clipping and fused AdamW) on ``--device`` (``cuda``, or ``cpu`` to run the same code
on a CPU), with bf16 weights (``--dtype``), bf16 autocast (``--autocast``), the attention kernel (``--attn``),
``torch.compile`` of the LLM's decoder layers (``--compile``), any LLM or encoder by registry name or folder
(``--llm``, ``--encoder``), or a randomly initialised one of a published shape saved to a folder and loaded from it
(``--random-llm-config``, ``--random-encoder-config``: model hubs are out of reach on the benchmark machines).
FLOPs per step are ``bench_train_infer.py``'s analytic count (``analytic_flops``); MFU divides them by the time and
the GPU's dense bf16 peak from NVIDIA's datasheets (``GPU_BF16_PEAK_TFLOPS``; ``--peak-tflops`` overrides; unknown
devices, CPUs included, get no MFU but a note). ``--smoke`` makes it tiny (random tiny backbones, 2 steps) to test
the plumbing. Writes ``results/train_<device>_<options>.json`` with the command.
See benchmarks/README.md ("bench_train_gpu.py") for what each field means.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_infer import (  # noqa: E402 - the CPU benchmark's machine, data, step shapes and FLOP count
    RESULTS,
    SR,
    PeakRSS,
    Variant,
    analytic_flops,
    cpu_info,
    make_batch,
    shapes,
    start_run,
    train_batch_data,
)

from speechlm.config import ModelConfig  # noqa: E402
from speechlm.tasks import get_task  # noqa: E402
from speechlm.utils import write_json  # noqa: E402


# --------------------------------------------------------------------------------------------------
# the GPU's peak, the device, random backbones
# --------------------------------------------------------------------------------------------------
# Dense bf16 tensor-core peaks in TFLOP/s (without 2:4 sparsity, which NVIDIA's datasheets list first, at twice these):
#   H100 SXM 989, H100 NVL 835, H100 PCIe 756: NVIDIA H100 Tensor Core GPU datasheet (1,979 / 1,671 / 1,513 "with sparsity")
#   H200 SXM 989, H200 NVL 835: NVIDIA H200 datasheet (the H100's chip with more memory; 1,979 / 1,671 with sparsity)
#   GH200 989: NVIDIA GH200 Grace Hopper Superchip datasheet
#   B200 2250: NVIDIA HGX B200 specifications (4.5 PFLOPS FP16/BF16 with sparsity, per GPU)
#   A100 312: NVIDIA A100 datasheet (624 with sparsity; SXM and PCIe, 40 and 80 GB alike)
#   L40S 362, L40 181, L4 121, A10 125: the L40S, L40, L4 and A10 datasheets (733, 362, 242, 250 with sparsity)
# First match against torch.cuda.get_device_name() wins ("NVIDIA H100 80GB HBM3" is the SXM part; "NVIDIA H200" too).
GPU_BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    (r"GH200", 989.0), (r"H200 NVL", 835.0), (r"H200", 989.0),
    (r"H100 NVL", 835.0), (r"H100 PCIe", 756.0), (r"H100", 989.0),
    (r"B200", 2250.0), (r"A100", 312.0),
    (r"L40S", 362.0), (r"\bL40\b", 181.0), (r"\bL4\b", 121.0), (r"\bA10\b", 125.0),
]


def bf16_peak_tflops(device_name: str) -> tuple[float | None, str | None]:
    """(dense bf16 peak TFLOP/s, the table row that matched) for a CUDA device name; (None, None) if unknown."""
    for pattern, tflops in GPU_BF16_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return tflops, pattern
    return None, None


def device_info(device: torch.device) -> dict[str, Any]:
    """The accelerator (or CPU) the device mode ran on."""
    if device.type != "cuda":
        return {"device_name": cpu_info()["cpu_model"]}
    props = torch.cuda.get_device_properties(device)
    return {"device_name": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1), "cudnn": torch.backends.cudnn.version()}


def random_backbones(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Folders of the randomly initialised backbones asked for (written once under ``--random-dir``), else None."""
    from speechlm.utils import cache_root

    root = Path(args.random_dir) if args.random_dir else cache_root() / "random"
    on = "cuda" if args.device == "cuda" else "cpu"
    llm = enc = None
    if args.random_llm_config:
        from speechlm.backbones.llm import save_random_llm

        llm = str(save_random_llm(args.random_llm_config, root / f"llm-{args.random_llm_config}", device=on))
    if args.random_encoder_config:
        from speechlm.backbones.whisper import save_random_whisper

        enc = str(save_random_whisper(args.random_encoder_config, root / f"whisper-{args.random_encoder_config}"))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the model built on the GPU to be saved is gone: hand its memory back
    return llm, enc


class StepClock:
    """Per-step times without a host-device sync inside the loop: CUDA events on a GPU (read after one sync at
    the end), the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def step_times(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def device_out_path(args: argparse.Namespace, llm: str) -> Path:
    """results/train_<device>_<llm>_<dtype>[_autocast]_<attn>[_compile]_b<batch>[_smoke].json"""
    name = args.random_llm_config or Path(llm.rstrip("/")).name
    tag = "_".join([args.device, re.sub(r"[^A-Za-z0-9.-]+", "-", name), args.dtype] + (["autocast"] if args.autocast else [])
                   + [args.attn] + (["compile"] if args.compile else []) + [f"b{args.batch}"] + (["smoke"] if args.smoke else []))
    return RESULTS / f"train_{tag}.json"


def run_device(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Time ``--steps`` training steps (forward, backward, clipping, fused AdamW) of one configuration on
    ``--device`` after ``--warmup`` steps, and write the result JSON (see the module docstring)."""
    from speechlm.model.builders import backbone_dtype, build_speechlm, resolve_attn_implementation

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.tf32:
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for the fp32 matmuls left
    clock = start_run()
    log = clock.log
    rss = PeakRSS()
    rand_llm, rand_enc = random_backbones(args)
    base = ModelConfig()
    if args.smoke:  # the tests' tiny sizes (speechlm.model.builders.SIZES["tiny"])
        base = ModelConfig(encoder="tiny-whisper", llm="tiny-llama", downsample=4, adapter_hidden=64, lora_r=4, lora_alpha=8)
    mcfg = dataclasses.replace(base, encoder=rand_enc or args.encoder or base.encoder, llm=rand_llm or args.llm or base.llm,
                               dtype=args.dtype, attn_implementation=args.attn)
    attn = resolve_attn_implementation(mcfg.attn_implementation, backbone_dtype(mcfg.dtype), device)
    log(f"building model on {device}: encoder {mcfg.encoder}, LLM {mcfg.llm}, weights {mcfg.dtype}, attention {attn}")
    t0 = time.perf_counter()
    model = build_speechlm(mcfg, device=device)
    build_s = time.perf_counter() - t0
    model.train()
    model.encoder.pad_to_30s = False
    if args.compile:  # each decoder block alone (torchtitan's per-block compile): the names and peft wrapping stay
        for layer in model.decoder.layers:
            layer.compile(backend=args.compile_backend)
    task = get_task("asr")
    msg = task.user_message(task.instructions[0], model.audio_token)
    waves, targets, source = train_batch_data(model.tokenizer, model.eos_id, batch=args.batch, seconds=args.clip_seconds,
                                              answer_tokens=args.answer_tokens, real=False)
    ours = Variant("ours", pad_30s=False, system_prompt=mcfg.system_prompt, logits="answer")
    batch = make_batch(model, [w.to(device) for w in waves], targets, ours.system_prompt, msg)  # inputs already there
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.autocast):
            loss_sum, n_tok = model(batch)  # [], []
        loss = loss_sum / n_tok.clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()  # no .item(): the loop does not wait for the device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warm_s = []
    for i in range(args.warmup):  # the first steps compile (--compile) and pick kernels
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        warm_s.append(time.perf_counter() - t0)
        log(f"  warm-up step {i + 1}/{args.warmup}: {warm_s[-1]:.3f} s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss.reset()
    steps = StepClock(device)
    losses = []
    sync()
    t0 = time.perf_counter()
    steps.mark()
    for _ in range(args.steps):
        losses.append(step())
        steps.mark()
    sync()
    wall = time.perf_counter() - t0
    times = steps.step_times()
    loss_values = torch.stack(losses).float().cpu()  # one transfer, after timing
    s_per_step = wall / args.steps

    sh = shapes(model, batch, ours)
    fl = analytic_flops(model, sh)
    name = device_info(device)["device_name"]
    if args.peak_tflops:
        peak, peak_src = args.peak_tflops, "--peak-tflops"
    elif device.type == "cuda":
        peak, row = bf16_peak_tflops(name)
        peak_src = f"NVIDIA datasheet, dense bf16 (table row {row!r})" if peak else None
    else:
        peak, peak_src = None, None
    achieved = fl["total"] / s_per_step / 1e12
    mem: dict[str, Any]
    if device.type == "cuda":
        mem = {"peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
               "peak_memory_kind": "torch.cuda.max_memory_allocated over the timed steps",
               "peak_memory_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20, 1)}
    else:
        mem = {"peak_memory_mib": rss.read_mib(), "peak_memory_kind": "process peak RSS (VmHWM) over the timed steps"}
    weights: dict[str, float] = {}
    for p in model.parameters():
        key = str(p.dtype).replace("torch.", "")
        weights[key] = weights.get(key, 0.0) + p.numel() * p.element_size() / 2**20
    audio_s = sum(w.numel() for w in batch.waves) / SR
    res: dict[str, Any] = {
        "benchmark": "train_device",
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", sys.argv[0], *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": name,
        "smoke": args.smoke,
        "machine": {**clock.machine, **device_info(device)},
        "options": {"dtype": mcfg.dtype, "autocast_bf16": args.autocast, "attn_implementation": args.attn,
                    "attn_implementation_resolved": attn, "compile": args.compile,
                    "compile_backend": args.compile_backend if args.compile else None,
                    "float32_matmul_precision": torch.get_float32_matmul_precision(), "batch": args.batch,
                    "clip_seconds": args.clip_seconds, "answer_tokens": args.answer_tokens, "encoder": mcfg.encoder,
                    "llm": mcfg.llm, "random_llm_config": args.random_llm_config or None,
                    "random_encoder_config": args.random_encoder_config or None},
        "config": {"model": dataclasses.asdict(mcfg), "params": model.num_params(),
                   "weights_mib_by_dtype": {k: round(v, 1) for k, v in weights.items()},
                   "trainable_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in params})},
        "inputs": {"audio_source": source, "instruction": task.instructions[0],
                   "note": "inputs are on the device before timing: data loading is not measured"},
        "build_s": build_s,
        "warmup_steps": args.warmup, "warmup_s": [round(x, 4) for x in warm_s],
        "timed_steps": args.steps, "step_times_s": [round(x, 5) for x in times],
        "s_per_step": s_per_step, "s_per_step_median": statistics.median(times),
        "samples_per_s": args.batch / s_per_step, "audio_s_per_s": audio_s / s_per_step,
        "llm_tokens_per_s": sh["batch"] * sh["seq_len"] / s_per_step,
        "shapes": sh, "flops_per_step": fl, "achieved_tflops": achieved,
        "peak_bf16_tflops": peak, "peak_source": peak_src,
        "mfu": achieved / peak if peak else None,
        **mem,
        "loss_first": float(loss_values[0]), "loss_last": float(loss_values[-1]),
        "loss_finite": bool(torch.isfinite(loss_values).all()),
        "wall_s": clock.wall_s(),
    }
    if not peak:
        res["mfu_note"] = (f"no bf16 peak known for {name!r} ({device.type}): MFU omitted; pass --peak-tflops "
                           "to set one (GPU_BF16_PEAK_TFLOPS lists the datasheet peaks)")
    if args.profile:
        res["profile"] = profile_steps(step, sync, device, Path(args.profile), log)
    out_path = Path(args.out) if args.out else device_out_path(args, mcfg.llm)
    write_json(out_path, res)
    mfu = f"{100 * res['mfu']:.1f}%" if res["mfu"] is not None else "n/a"
    log(f"{device.type} ({name}): {s_per_step * 1e3:.1f} ms/step, {res['samples_per_s']:.1f} samples/s, "
        f"{achieved:.2f} TFLOP/s, MFU {mfu}, peak memory {mem['peak_memory_mib']:.0f} MiB, loss {res['loss_last']:.3f}")
    log(f"wrote {out_path}")
    return res


def profile_steps(step, sync, device: torch.device, path: Path, log, n: int = 3) -> dict[str, Any]:
    """Profile ``n`` steps (after the timed ones) and write the op tables to ``path``: ops by device (CUDA) time
    and by host (CPU) time, with the number of kernel launches. A step whose device time is far below its wall
    time is bound by the host (Python, launches, syncs), not by the GPU. Returns the totals per step."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync()
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        sync()
    wall = (time.perf_counter() - t0) / n
    avg = prof.key_averages()
    # kernels alone: an aten op's self device time repeats its kernels' (summing both would count each twice)
    dev_us = sum(e.self_device_time_total for e in avg if e.device_type == torch.autograd.DeviceType.CUDA)
    launches = sum(e.count for e in avg if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    syncs = sum(e.count for e in avg if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync"))
    head = (f"profiled {n} steps: wall {1e3 * wall:.1f} ms/step, device busy {dev_us / 1e3 / n:.1f} ms/step, "
            f"{launches / n:.0f} kernel launches/step, {syncs / n:.0f} copies or syncs/step\n\n")
    tables = []
    if device.type == "cuda":
        tables.append("== by device time ==\n" + avg.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=70))
    tables.append("== by host time ==\n" + avg.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + "\n\n".join(tables) + "\n")
    log(head.strip() + f" (tables in {path})")
    return {"wall_ms_per_step": 1e3 * wall, "device_busy_ms_per_step": dev_us / 1e3 / n,
            "kernel_launches_per_step": launches / n, "copies_or_syncs_per_step": syncs / n, "tables": str(path)}


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:2]))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where to run (cpu: the plumbing, no MFU)")
    ap.add_argument("--smoke", action="store_true", help="tiny random backbones, batch 2 x 1 s, 1+2 steps (tests)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="frozen backbone weights (model.dtype)")
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast around the forward (train.bf16)")
    ap.add_argument("--attn", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"],
                    help="attention kernel (model.attn_implementation)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each LLM decoder layer")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: tracing only, for tests)")
    ap.add_argument("--llm", default="", help="LLM: registry name or Hugging Face folder (default: ModelConfig's)")
    ap.add_argument("--encoder", default="", help="encoder: registry name or Hugging Face Whisper folder")
    ap.add_argument("--random-llm-config", default="", metavar="SHAPE",
                    help="random Llama of a published shape, saved to a folder and loaded from it "
                         "(speechlm.backbones.llm.RANDOM_LLM_SHAPES: tiny, smollm2-135m, llama-3.2-1b, llama-3.2-3b, ...)")
    ap.add_argument("--random-encoder-config", default="", metavar="SHAPE",
                    help="random Whisper of a published shape (speechlm.backbones.whisper.RANDOM_WHISPER_SHAPES: tiny.en, ...)")
    ap.add_argument("--random-dir", default="", help="where random backbones are saved (default: the speechlm cache/random)")
    ap.add_argument("--batch", type=int, default=0, help="clips per step (default 16; smoke 2)")
    ap.add_argument("--clip-seconds", type=float, default=0.0, help="seconds per clip (default 5; smoke 1)")
    ap.add_argument("--answer-tokens", type=int, default=0, help="answer tokens per clip (default 40; smoke 8)")
    ap.add_argument("--warmup", type=int, default=-1, help="untimed steps first (default 3; smoke 1)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default 10; smoke 2)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 peak for the MFU, overriding the datasheet table")
    ap.add_argument("--tf32", action="store_true", help="TF32 tensor cores for fp32 matmuls (float32_matmul_precision high)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 keeps torch's default)")
    ap.add_argument("--profile", default="", metavar="TXT",
                    help="after timing, profile 3 more steps with torch.profiler and write its tables (ops by device "
                         "time, by host time) to this text file: where a step's time goes")
    ap.add_argument("--out", default="", help="result JSON (default benchmarks/results/train_<device>_<options>.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or (2 if args.smoke else 16)
    args.clip_seconds = args.clip_seconds or (1.0 if args.smoke else 5.0)
    args.answer_tokens = args.answer_tokens or (8 if args.smoke else 40)
    args.warmup = args.warmup if args.warmup >= 0 else (1 if args.smoke else 3)
    args.steps = args.steps or (2 if args.smoke else 10)
    return run_device(args, argv)


if __name__ == "__main__":
    main()

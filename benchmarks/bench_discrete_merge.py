"""Discrete decoding with peft's wrappers against merged once (DiscreteRunner merges by default): one TTS sentence.

    python benchmarks/bench_discrete_merge.py     # needs runs/sgpt_demo (speechlm demo --recipe speechgpt-tiny)

Measured 2026-11-30 on the 2-core CPU (another job running), 60 units: 31.2 s wrapped, 15.9 s merged, the same units
(benchmarks/results/discrete_demo/merge_decode.json).
"""

import time

from speechlm.checkpoint.discrete import load_discrete_checkpoint
from speechlm.inference.speak import DiscreteRunner

CKPT = "runs/sgpt_demo/checkpoints/step-000120"


def timed(runner: DiscreteRunner, n: int = 2) -> tuple[float, list[int]]:
    t0 = time.time()
    for _ in range(n):
        runner.gen.manual_seed(0)
        _, units = runner.tts("the birch canoe slid on the smooth planks", max_units=60)
    return (time.time() - t0) / n, units


if __name__ == "__main__":
    wrapped = timed(DiscreteRunner(load_discrete_checkpoint(CKPT), merge=False))
    merged = timed(DiscreteRunner(load_discrete_checkpoint(CKPT)))
    print(f"peft wrapped {wrapped[0]:.1f} s, merged {merged[0]:.1f} s, same units: {wrapped[1] == merged[1]}")

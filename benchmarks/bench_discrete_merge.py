"""Discrete decoding with peft's wrappers against merged once (DiscreteRunner now merges): one TTS sentence, 60 units.

    python benchmarks/bench_discrete_merge.py     # needs runs/sgpt_demo (speechlm demo --recipe speechgpt-tiny)

Measured 2026-11-30 on the 2-core CPU (another job running): 31.2 s wrapped, 15.9 s merged, the same units.
Since the runner merges on load, the first line now times the merged model too; the figure is from before.
"""
import time, torch
from speechlm.inference.speak import DiscreteRunner
r = DiscreteRunner.from_checkpoint("runs/sgpt_demo/checkpoints/step-000120")
def t(n=2):
    t0 = time.time()
    for _ in range(n):
        r.gen.manual_seed(0); w, u = r.tts("the birch canoe slid on the smooth planks", max_units=60)
    return (time.time() - t0) / n, u[:10]
print("peft wrapped", t())
r.model.llm = r.model.llm.merge_and_unload()
print("merged", t())

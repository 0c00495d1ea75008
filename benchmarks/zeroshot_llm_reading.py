"""Can the LLM read the CTC stage's output with no LM training? A checkpoint after the CTC-only stage (adapter
CTC-trained, LoRA untouched) decoded four ways: the LLM reading posterior-weighted embeddings (LegoSLM) or the
compressed frames, each with and without the CTC length budget, beside the greedy CTC transcript.

    python benchmarks/zeroshot_llm_reading.py runs/demo_d/checkpoints/step-001500 \
        runs/demo_d/data/real/test_open.jsonl benchmarks/results/demo_ctc/zeroshot_d1500.json

Result on run D (25 asr_en clips): greedy CTC 45.2%; the instruct LLM does not copy, it describes
("The audio is ..."): 97.0% / 248% (posterior input, with / without the budget), 98.9% / 304% (frames).
"""
import json, sys, time
import torch
torch.set_num_threads(1)
from speechlm.checkpoint import load_checkpoint
from speechlm.data.audio import load_audio
from speechlm.data.manifest import read_manifest
from speechlm.evaluation.metrics import wer_details
from speechlm.inference.transcribe import CTCTranscriber, Transcriber
from speechlm.tasks import get_task

ckpt, dev = sys.argv[1], sys.argv[2]
model, cfg, _ = load_checkpoint(ckpt)
cuts = read_manifest(dev)
refs = [c.text for c in cuts]
waves = [load_audio(c.audio, start=c.start, duration=c.duration) for c in cuts]
asr = get_task("asr")
res = {}
def row(name, hyps):
    d = wer_details(refs, hyps)
    res[name] = {k: d[k] for k in ("wer", "substitutions", "deletions", "insertions")}
    res[name]["examples"] = [[r, h] for r, h in list(zip(refs, hyps))[:3]]
    print(name, json.dumps(res[name])[:400], flush=True)
t = time.time()
row("ctc_greedy", CTCTranscriber(model)(waves))
for post in (True, False):
    model.posterior_input = post
    for budget in (1.2, 0.0):
        model.ctc_length_budget = budget
        row(f"llm_posterior={post}_budget={budget}", Transcriber(model, asr, max_new_tokens=64)(waves))
print(time.time() - t)
json.dump(res, open(sys.argv[3], "w"), indent=1)

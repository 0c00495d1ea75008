"""Throughput and latency of ``speechlm serve`` under 1, 4 and 16 concurrent clients: dynamic batching against
sequential serving (max_batch 1) of the same requests, over loopback HTTP with the official ``openai`` client.

    python benchmarks/bench_serving.py                 # tiny random model, ~2 min on 2 cores -> results/serving.json
    python benchmarks/bench_serving.py --model demo    # SmolLM2-135M + Whisper tiny.en, untrained adapter (slower)

Every request is a chat completion with a 1-2 s tone clip as input_audio and exactly ``--tokens`` answer tokens
(the LM head is limited to letter tokens with no end-of-turn, so every request does the same work whatever
the weights). Latency is per request, from send to the full answer; throughput is requests per second over
the whole run. The same requests run in both modes.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
from test_serving import LiveServer  # noqa: E402  (uvicorn in a thread on a free port)

from speechlm.serving.app import Settings, create_app  # noqa: E402
from speechlm.serving.engine import Engine  # noqa: E402
from speechlm.tasks import get_task  # noqa: E402

SR = 16000


def letters_only(model) -> None:
    """Limit the LM head to letter tokens and never end, so every request decodes exactly max_tokens tokens."""
    tok, head = model.tokenizer, model.causal_lm.get_output_embeddings()
    vocab = head.weight.shape[0]
    bias = torch.full((vocab,), -1e4)
    bias[[i for i in range(vocab) if tok.decode([i]).strip().isalpha() and tok.decode([i]).isascii()]] = 0.0
    head.register_forward_hook(lambda mod, inp, out: out + bias.to(out.dtype))


def build_model(name: str):
    from speechlm.model.builders import speechlm_smol, speechlm_tiny

    model = (speechlm_tiny() if name == "tiny" else speechlm_smol()).eval()
    letters_only(model)
    return model


def clip(i: int) -> str:
    t = np.arange(int((1.0 + 0.1 * (i % 10)) * SR)) / SR
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * (200 + 15 * i) * t)).astype(np.float32), SR, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def run(model, max_batch: int, clients: int, n_requests: int, tokens: int) -> dict:
    import openai

    engine = Engine(model, get_task("asr"), model_id="bench", vad="energy", max_batch=max_batch, max_wait_s=0.01, max_queue=256)
    clips = [clip(i) for i in range(n_requests)]
    with LiveServer(create_app(engine, Settings(request_timeout_s=600))) as live:
        pool_clients = [openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=600) for _ in range(clients)]

        def ask(i: int) -> float:
            t = time.perf_counter()
            out = pool_clients[i % clients].chat.completions.create(model="bench", max_tokens=tokens, messages=[{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": clips[i], "format": "wav"}},
                {"type": "text", "text": "Transcribe the audio."}]}])
            assert out.usage.completion_tokens == tokens
            return time.perf_counter() - t

        ask(0)  # warm-up: first-call allocations
        engine.batcher.batch_sizes.clear()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            lat = sorted(pool.map(ask, range(n_requests)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=20)
    return {"max_batch": max_batch, "clients": clients, "requests": n_requests, "wall_s": round(wall, 3),
            "throughput_rps": round(n_requests / wall, 3), "tokens_per_s": round(n_requests * tokens / wall, 1),
            "p50_s": round(statistics.median(lat), 3), "p95_s": round(q[18], 3),
            "mean_batch": round(statistics.mean(engine.batcher.batch_sizes), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "demo"], default="tiny")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serving.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model)
    rows = []
    for clients in (1, 4, 16):
        for mode, mb in (("sequential", 1), ("batched", args.max_batch)):
            r = {"mode": mode, **run(model, mb, clients, args.requests, args.tokens)}
            print(json.dumps(r), flush=True)
            rows.append(r)
    speedup = {c: round(next(r["throughput_rps"] for r in rows if r["clients"] == c and r["mode"] == "batched")
                        / next(r["throughput_rps"] for r in rows if r["clients"] == c and r["mode"] == "sequential"), 2)
               for c in (1, 4, 16)}
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[args.model] = {
        "command": "python benchmarks/bench_serving.py" + (" --model demo" if args.model == "demo" else ""),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "model": "tiny random SpeechLM" if args.model == "tiny" else "SmolLM2-135M + Whisper tiny.en, untrained adapter",
        "tokens_per_request": args.tokens, "rows": rows, "batched_over_sequential_throughput": speedup,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"speed-up of batching (throughput, by clients): {speedup}\nwrote {out}")


if __name__ == "__main__":
    main()

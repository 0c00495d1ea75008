"""``speechlm serve`` against real clients: the official ``openai`` package, plain HTTP for every refusal, 16
concurrent clients, and the page in headless Debian chromium (playwright).

The model is the tiny random one with its LM head limited to letter tokens and no end-of-turn, so every
answer is visible text of exactly max_tokens tokens; the energy VAD (tones count as voiced, white noise not)
keeps the tests independent of silero.
"""

from __future__ import annotations

import base64
import io
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from speechlm.serving.app import Settings, create_app  # noqa: E402
from speechlm.serving.engine import Engine  # noqa: E402
from speechlm.serving.uploads import Limits  # noqa: E402
from speechlm.tasks import get_task  # noqa: E402

SR = 16000
KEY = "sk-test-key"
CHROMIUM = Path("/usr/bin/chromium")


def talking_tiny_model():
    """The tiny random SpeechLM, made to always say something: letter tokens only, never end-of-turn."""
    from speechlm.model.builders import speechlm_tiny

    model = speechlm_tiny().eval()
    tok = model.tokenizer
    head = model.causal_lm.get_output_embeddings()
    vocab = head.weight.shape[0]
    letters = [i for i in range(vocab) if tok.decode([i]).strip().isalpha() and tok.decode([i]).isascii()]
    bias = torch.full((vocab,), -1e4)
    bias[letters] = 0.0
    head.register_forward_hook(lambda mod, inp, out: out + bias.to(out.dtype))
    return model


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def wav_bytes(x: np.ndarray, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 30 or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def model():
    return talking_tiny_model()


def make_engine(model, **kw) -> Engine:
    kw = {"vad": "energy", "max_audio_seconds": 4.0, "max_batch": 8, "max_wait_s": 0.02, "max_queue": 64, **kw}
    return Engine(model, get_task("asr"), model_id="speechlm-tiny", **kw)


@pytest.fixture(scope="module")
def server(model):
    engine = make_engine(model)
    settings = Settings(api_key=KEY, limits=Limits(max_upload_bytes=2_000_000, max_audio_seconds=30.0), request_timeout_s=60)
    with LiveServer(create_app(engine, settings)) as live:
        live.engine = engine
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def chat_audio(data: bytes, text: str = "Transcribe the audio.", fmt: str = "wav") -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}},
        {"type": "text", "text": text}]}]


# ---- the openai package ---------------------------------------------------------------------------------
def test_transcription_formats(client, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, tone(1.0), SR)
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="speechlm-tiny", file=f).text
    assert text.strip() and text.isascii()
    with open(path, "rb") as f:
        verbose = client.audio.transcriptions.create(model="speechlm-tiny", file=f, response_format="verbose_json")
    assert verbose.text == text and len(verbose.segments) == 1 and verbose.segments[0].end == pytest.approx(1.0, abs=0.01)
    with open(path, "rb") as f:
        srt = client.audio.transcriptions.create(model="speechlm-tiny", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\n") and text in srt
    with open(path, "rb") as f:
        vtt = client.audio.transcriptions.create(model="speechlm-tiny", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")
    assert [m.id for m in client.models.list().data] == ["speechlm-tiny"]


def test_chat_with_input_audio_and_streaming(client):
    messages = chat_audio(wav_bytes(tone(1.2, 330)))
    full = client.chat.completions.create(model="speechlm-tiny", messages=messages, max_tokens=6)
    answer = full.choices[0].message.content
    assert answer and full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 6
    chunks = list(client.chat.completions.create(model="speechlm-tiny", messages=messages, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2, "streamed token by token, not in one piece"
    assert "".join(deltas) == answer  # streaming and not streaming say the same (greedy)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 6


def test_any_task_by_instruction_and_constrained_decoding(client):
    messages = chat_audio(wav_bytes(tone(1.0)), text="Is the speaker male or female?")
    free = client.chat.completions.create(model="speechlm-tiny", messages=messages, max_tokens=3)
    assert free.choices[0].message.content
    picked = client.chat.completions.create(model="speechlm-tiny", messages=messages, extra_body={"constrained": True})
    assert picked.choices[0].message.content in ("male", "female")


def test_long_audio_is_split_at_pauses_and_stitched(client, server):
    x = np.concatenate([silence(0.5), tone(2.5, 220), silence(1.0), tone(3.0, 330), silence(1.0), tone(2.0, 440), silence(0.5)])
    r = httpx.post(server.url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
                   files={"file": ("long.wav", wav_bytes(x), "audio/wav")}, data={"response_format": "verbose_json"}, timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    segs = doc["segments"]
    assert doc["duration"] == pytest.approx(10.5, abs=0.01) and len(segs) == 3
    for seg, (start, end) in zip(segs, [(0.5, 3.0), (4.0, 7.0), (8.0, 10.0)]):  # each tone inside its segment
        assert seg["start"] <= start + 0.05 and seg["end"] >= end - 0.05 and seg["end"] - seg["start"] <= 4.0
    assert doc["text"] == " ".join(s["text"] for s in segs)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="speechlm-tiny", messages=chat_audio(wav_bytes(x)), stream=True, max_tokens=4))
    assert len(streamed.split(" ")) == 3


def test_noise_only_audio_gets_an_empty_transcript(client, tmp_path):
    noise = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, noise, SR)
    with open(path, "rb") as f:
        assert client.audio.transcriptions.create(model="speechlm-tiny", file=f).text == ""
    out = client.chat.completions.create(model="speechlm-tiny", messages=chat_audio(wav_bytes(noise)))
    assert out.choices[0].message.content == ""
    silent = client.chat.completions.create(model="speechlm-tiny", messages=chat_audio(wav_bytes(silence(2.0))))
    assert silent.choices[0].message.content == ""


# ---- refusals ---------------------------------------------------------------------------------------------
def _post_file(server, data: bytes, name: str = "a.wav", key: str | None = KEY, **form) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(server.url + "/v1/audio/transcriptions", headers=headers, files={"file": (name, data)}, data=form, timeout=60)


def _message(r: httpx.Response) -> str:
    return r.json()["error"]["message"]


def test_bad_inputs_get_their_status_and_message(server, client):
    good = wav_bytes(tone(0.5))
    r = _post_file(server, good, key=None)
    assert r.status_code == 401 and "API key" in _message(r)
    r = _post_file(server, good, key="sk-wrong")
    assert r.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # open without the key

    r = _post_file(server, b"")
    assert r.status_code == 400 and "empty (0 bytes)" in _message(r)
    r = _post_file(server, wav_bytes(np.zeros(0, np.float32)))
    assert r.status_code == 400 and "no audio samples" in _message(r)
    r = _post_file(server, b"this is plain text, not audio at all" * 10, name="notes.txt")
    assert r.status_code == 415 and "not audio" in _message(r)
    corrupt = bytearray(wav_bytes(tone(1.0)))
    corrupt[20:22] = b"\x99\x99"  # a WAV format tag no decoder knows
    r = _post_file(server, bytes(corrupt))
    assert r.status_code in (400, 415) and ("not audio" in _message(r) or "corrupt" in _message(r))
    r = _post_file(server, wav_bytes(tone(31.0)))  # limit: 30 s in this fixture
    assert r.status_code == 413 and "31.0 s long" in _message(r) and "at most 30 s" in _message(r)
    r = _post_file(server, np.zeros(2_100_000, np.uint8).tobytes())  # limit: 2,000,000 bytes
    assert r.status_code == 413 and "at most 2000000 bytes" in _message(r)
    r = _post_file(server, good, response_format="docx")
    assert r.status_code == 400 and "response_format" in _message(r)
    r = httpx.post(server.url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"}, data={"model": "x"})
    assert r.status_code == 400 and "file" in _message(r)

    def chat(body) -> httpx.Response:
        return httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body, timeout=60)

    r = chat({"model": "x", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 400 and "input_audio" in _message(r)
    bad64 = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "@@@not base64", "format": "wav"}}]}]
    r = chat({"model": "x", "messages": bad64})
    assert r.status_code == 400 and "base64" in _message(r)
    r = chat({"model": "x", "messages": chat_audio(good, fmt="midi")})
    assert r.status_code == 415 and "midi" in _message(r)
    r = chat({"model": "x", "messages": chat_audio(good), "modalities": ["text", "audio"]})
    assert r.status_code == 400 and "does not speak" in _message(r)
    r = chat({"model": "x", "messages": chat_audio(good), "temperature": 9})
    assert r.status_code == 400 and "temperature" in _message(r)
    r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, content=b"{oops")
    assert r.status_code == 400 and "not JSON" in _message(r)
    r = httpx.post(server.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"}, json={"input": "hi"})
    assert r.status_code == 501 and "does not speak" in _message(r)


def test_full_queue_gets_503_with_retry_after_and_slow_requests_time_out(model):
    gate = threading.Event()
    engine = make_engine(model, max_batch=1, max_queue=1)
    real = engine.batcher.run_batch

    def held(jobs, emit):  # the model is "busy" until the gate opens
        gate.wait(30)
        real(jobs, emit)

    engine.batcher.run_batch = held
    settings = Settings(limits=Limits(), request_timeout_s=2.0)
    body = {"model": "x", "max_tokens": 2, "messages": chat_audio(wav_bytes(tone(0.5)))}
    with LiveServer(create_app(engine, settings)) as live, ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(httpx.post, live.url + "/v1/chat/completions", json=body, timeout=30) for _ in range(6)]
        results = [f.result() for f in futures]
        gate.set()
    codes = sorted(r.status_code for r in results)
    busy = [r for r in results if r.status_code == 503]
    assert busy, codes  # one decoding, one waiting: the rest are refused at once
    assert all(int(r.headers["Retry-After"]) >= 1 and "queue is full" in _message(r) for r in busy)
    timed_out = [r for r in results if r.status_code == 504]
    assert timed_out and "longer than 2 s" in _message(timed_out[0]), codes


def test_sixteen_concurrent_clients_are_batched_without_errors(server):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    sizes_before = len(server.engine.batcher.batch_sizes)
    clients = [openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120) for _ in range(16)]
    clips = [wav_bytes(tone(0.6 + 0.05 * i, 200 + 20 * i)) for i in range(16)]

    def ask(i: int) -> str:
        out = clients[i % 16].chat.completions.create(model="speechlm-tiny", messages=chat_audio(clips[i % 16]), max_tokens=8)
        return out.choices[0].message.content

    t0 = time.time()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(32)))  # 32 requests, 16 at a time, loopback only
    assert all(answers) and time.time() - t0 < 120
    sizes = server.engine.batcher.batch_sizes[sizes_before:]
    assert sum(sizes) == 32 and max(sizes) > 1, sizes  # concurrent requests shared generate calls
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, f"memory grew {grown_mb:.0f} MB under load"


# ---- checkpoint and page ----------------------------------------------------------------------------------
def test_engine_reads_a_checkpoint_folder(tmp_path):
    from speechlm.checkpoint import save_checkpoint
    from speechlm.config import load_recipe
    from speechlm.model.builders import build_speechlm

    cfg = load_recipe("tiny", ["model.max_audio_seconds=5"])
    ckpt = save_checkpoint(build_speechlm(cfg.model, seed=cfg.train.seed), cfg, tmp_path / "run", step=0, state={})
    engine = Engine.from_checkpoint(tmp_path / "run")
    assert engine.model_id == "speechlm-run" and engine.max_audio_seconds == 5 and engine.task.name == "asr"
    assert ckpt.is_dir()


def test_web_page_streams_a_transcript_in_headless_chromium(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (install.sh installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0, 300), SR)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        page = browser.new_page(viewport={"width": 900, "height": 820})
        page.goto(server.url + "/")
        page.fill("#key", KEY)
        page.dispatch_event("#key", "change")
        page.wait_for_function("document.querySelectorAll('#task option').length > 5")
        page.set_input_files("#file", str(clip))
        page.click("#ask")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=60_000)
        answer = page.text_content("#answer")
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        browser.close()
    assert answer and answer.strip()
    assert (tmp_path / "serve.png").stat().st_size > 10_000

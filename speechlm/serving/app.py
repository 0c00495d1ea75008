"""The HTTP side of ``speechlm serve``: OpenAI-compatible routes, limits, the API key and the web page.

Routes (OpenAI's API reference for the shapes):
  POST /v1/audio/transcriptions  multipart: file, model, prompt (the instruction; default the checkpoint's task),
                                 temperature, response_format json|text|verbose_json|srt|vtt
  POST /v1/chat/completions      input_audio parts (base64 wav/mp3/flac/ogg) beside text parts (the instruction);
                                 stream: true sends chat.completion.chunk server-sent events, then [DONE];
                                 ``constrained: true`` scores a closed-set task's labels instead of generating
  POST /v1/audio/speech          501: a continuous checkpoint does not speak (nor does audio output in chat); a discrete
                                 (speaking) checkpoint is served by speechlm.serving.speaking, which does
  GET  /v1/models, /v1/tasks, /health, and the page at / (static/, plain HTML and JavaScript)

Errors use OpenAI's shape ``{"error": {"message", "type", "code"}}``. Limits: an optional API key (Bearer,
compared with hmac.compare_digest), request bodies and uploads capped in bytes and audio in seconds (413),
undecodable audio 415 / corrupt or empty audio 400, a full queue 503 with Retry-After, a timeout per request
(504). Uploads are decoded from memory; nothing a client sends becomes a path.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from speechlm.inference.long_audio import to_srt, to_vtt
from speechlm.serving.engine import Answer, Engine
from speechlm.serving.http import Settings, error, install_common, json_body, model_list, parse_messages
from speechlm.serving.uploads import Limits, UploadError, decode_audio, decode_base64

STATIC = Path(__file__).parent / "static"
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
def create_app(engine: Engine, settings: Settings = Settings()) -> FastAPI:
    """The app around a loaded engine; the batcher runs for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.batcher.start()
        yield
        await engine.batcher.stop()

    app = FastAPI(title="speechlm", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_common(app, settings)
    limits = settings.limits

    # ---- routes ---------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.model_id, "waiting": engine.batcher.waiting,
                "max_queue": engine.batcher.max_queue, "max_batch": engine.batcher.max_batch}

    @app.get("/v1/models")
    async def models() -> dict:
        return model_list(engine.model_id)

    @app.get("/v1/tasks")
    async def tasks() -> dict:
        return {"default": engine.task.name, "tasks": engine.tasks()}

    @app.post("/v1/audio/speech")
    async def speech() -> JSONResponse:
        return error(501, "this checkpoint does not speak: it answers in text (serve a discrete checkpoint, e.g. one "
                          "trained with --recipe speechgpt-tiny, to get speech)", "no_audio_output")

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form(""), prompt: str = Form(""),
                             temperature: float = Form(0.0), response_format: str = Form("json"),
                             language: str = Form(""), granularities: list[str] = Form([], alias="timestamp_granularities[]")) -> Response:
        if response_format not in RESPONSE_FORMATS:
            raise UploadError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}")
        if "word" in granularities:
            raise UploadError(400, "word timestamps need a checkpoint trained on srwt; ask with that task's instruction "
                                   "through /v1/chat/completions, or use timestamp_granularities=segment")
        data = await file.read(limits.max_upload_bytes + 1)
        wave = await run_in_threadpool(decode_audio, data, limits, "the uploaded file")
        ans = await _answer(wave, prompt, None, _temperature(temperature))
        return _transcription_response(ans, response_format, language)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await json_body(request)
        if "audio" in (body.get("modalities") or []) or body.get("audio"):
            raise UploadError(400, "this checkpoint does not speak: ask for modalities [\"text\"]", "no_audio_output")
        if int(body.get("n") or 1) != 1:
            raise UploadError(400, "n must be 1")
        audio_b64, fmt, instruction = parse_messages(body.get("messages"))
        data = decode_base64(audio_b64, limits, "input_audio")
        wave = await run_in_threadpool(decode_audio, data, limits, f"input_audio ({fmt})")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise UploadError(400, "max_tokens must be a positive integer")
        temperature = _temperature(body.get("temperature", 0.0))
        constrained = bool(body.get("constrained", False))
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await _stream(wave, instruction, max_tokens, temperature, constrained, usage)
        ans = await _answer(wave, instruction, max_tokens, temperature, constrained)
        return JSONResponse(_completion(ans))

    # ---- helpers that need the engine -----------------------------------------------------------------
    async def _jobs(wave, instruction: str, max_tokens, temperature: float, constrained: bool = False):
        task, text = engine.task_for(instruction)
        pieces = await run_in_threadpool(engine.plan, wave, task)
        return pieces, engine.submit(wave, pieces, task, text, max_tokens, temperature, constrained)

    async def _answer(wave, instruction: str, max_tokens, temperature: float, constrained: bool = False) -> Answer:
        pieces, jobs = await _jobs(wave, instruction, max_tokens, temperature, constrained)
        return await engine.answer(wave, pieces, jobs, settings.request_timeout_s)

    async def _stream(wave, instruction, max_tokens, temperature, constrained, usage) -> StreamingResponse:
        pieces, jobs = await _jobs(wave, instruction, max_tokens, temperature, constrained)  # 503 before the stream
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
            doc = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": engine.model_id,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(doc)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            texts = engine.text_streams(jobs)
            last, sent = -1, False
            try:
                async for i, delta in engine.deltas(jobs, settings.request_timeout_s, texts):
                    if i != last and sent:
                        delta = " " + delta  # pieces of long audio join with a space, as stitch() joins them
                    last, sent = i, True
                    yield chunk({"content": delta})
            except UploadError as e:
                yield f"data: {json.dumps({'error': {'message': e.message, 'type': 'server_error', 'code': e.code}})}\n\n"
                yield "data: [DONE]\n\n"
                return
            n_tok = sum(len(t.ids) for t in texts)
            length = any(len(t.ids) >= j.payload.max_new_tokens for t, j in zip(texts, jobs))
            yield chunk({}, "length" if length else "stop")
            if usage:
                doc = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": engine.model_id,
                       "choices": [], "usage": _usage(n_tok)}
                yield f"data: {json.dumps(doc)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _completion(ans: Answer) -> dict:
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": engine.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.text}, "finish_reason": ans.finish_reason}],
                "usage": _usage(ans.completion_tokens)}

    return app


def _usage(completion_tokens: int) -> dict:
    return {"prompt_tokens": 0, "completion_tokens": completion_tokens, "total_tokens": completion_tokens}


def _temperature(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 2:
        raise UploadError(400, f"temperature must be a number from 0 to 2, not {value!r}")
    return float(value)


def _transcription_response(ans: Answer, response_format: str, language: str) -> Response:
    if response_format == "text":
        return PlainTextResponse(ans.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(ans.segments), media_type="application/x-subrip")
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(ans.segments), media_type="text/vtt")
    if response_format == "json":
        return JSONResponse({"text": ans.text, "usage": {"type": "tokens", "input_tokens": 0,
                                                         "output_tokens": ans.completion_tokens,
                                                         "total_tokens": ans.completion_tokens}})
    segments = [{"id": s.id, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [], "temperature": 0.0,
                 "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0} for s in ans.segments]
    return JSONResponse({"task": "transcribe", "language": language or "english", "duration": round(ans.duration, 3),
                         "text": ans.text, "segments": segments})


def serve(checkpoint: str = "", host: str = "127.0.0.1", port: int = 8000, api_key: str = "", max_upload_mb: float = 25.0,
          max_audio_seconds: float = 600.0, max_batch: int = 8, max_wait_ms: float = 10.0, max_queue: int = 64,
          timeout: float = 120.0, vad: str = "auto", device: str = "cpu") -> int:
    """Serve a checkpoint over an OpenAI-compatible HTTP API, with a web page at /.

    checkpoint: checkpoint folder, or run folder (its latest checkpoint); a discrete (speaking) checkpoint also answers /v1/audio/speech and chat with audio out.
    host: address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    port: TCP port.
    api_key: require Authorization: Bearer KEY on /v1 routes (default: the SPEECHLM_API_KEY environment variable, else none).
    max_upload_mb: largest upload in MB (OpenAI's limit is 25); larger gets 413.
    max_audio_seconds: longest audio accepted; longer gets 413 (audio past the model's maximum is split at pauses).
    max_batch: requests decoded together in one generate call.
    max_wait_ms: how long the first request of a batch waits for others.
    max_queue: requests that may wait; more get 503 with Retry-After.
    timeout: seconds a request may take, queue included; longer gets 504.
    vad: voice activity detector for silence and long audio: auto (silero when installed), silero or energy.
    device: cpu or cuda.
    """
    import uvicorn

    if not checkpoint:
        raise ValueError("give --checkpoint (a checkpoint folder or a run folder)")
    from speechlm.checkpoint.discrete import is_discrete_checkpoint

    key = api_key or os.environ.get("SPEECHLM_API_KEY", "")
    settings = Settings(api_key=key, limits=Limits(int(max_upload_mb * 1024 * 1024), max_audio_seconds),
                        request_timeout_s=timeout)
    if is_discrete_checkpoint(checkpoint):  # a speaking model: speech out, one request at a time
        from speechlm.serving.speaking import SpeakingEngine, create_speaking_app

        speaking = SpeakingEngine.from_checkpoint(checkpoint)
        print(f"[speechlm] serving {speaking.model_id} (speaking) on http://{host}:{port}/ "
              f"(API key {'required' if key else 'off'})", flush=True)
        uvicorn.run(create_speaking_app(speaking, settings), host=host, port=port, log_level="info")
        return 0
    engine = Engine.from_checkpoint(checkpoint, device=device, vad=vad, max_batch=max_batch,
                                    max_wait_s=max_wait_ms / 1000, max_queue=max_queue)
    print(f"[speechlm] serving {engine.model_id} on http://{host}:{port}/ (API key {'required' if key else 'off'})", flush=True)
    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="info")
    return 0

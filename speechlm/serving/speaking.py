"""`speechlm serve` for a speaking model: a discrete checkpoint (speechlm.checkpoint.discrete) behind OpenAI's routes.

Routes (OpenAI's API reference for the shapes):
  POST /v1/audio/speech          JSON {input, model, voice, response_format: mp3|opus|flac|wav|pcm, speed: 1}: the
                                 text spoken by the model (TTS: text -> units -> the checkpoint's unit vocoder).
                                 `voice` is accepted and ignored: the model speaks in the one voice its vocoder learned.
  POST /v1/audio/transcriptions  multipart file -> the discrete model's transcript (json | text)
  POST /v1/chat/completions      one input_audio part: the spoken question answered (chain of modality when the model
                                 was trained on it). With ``modalities: ["text", "audio"]`` the message also carries
                                 ``audio: {id, data (base64 in audio.format, default wav), transcript, expires_at,
                                 spoken_by}``: the units the model spoke after its text answer, or, when that answer
                                 carries none, the text spoken by the model's TTS task (``spoken_by: "tts"``).
  GET  /v1/models, /health

The discrete decoder generates one sequence at a time, so requests are answered one after another (a lock) in a
worker thread, each within the request timeout. The limits, the API key and the error shapes are the text server's
(speechlm.serving.http.install_common); text input is capped at ``max_input_chars`` (OpenAI's 4096).
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from speechlm.serving.http import Settings, install_common, json_body, model_list, parse_messages
from speechlm.serving.uploads import UploadError, decode_audio, decode_base64

SAMPLE_RATE = 16000
SPEECH_FORMATS = {"mp3": ("MP3", None, "audio/mpeg"), "opus": ("OGG", "OPUS", "audio/ogg"),
                  "flac": ("FLAC", None, "audio/flac"), "wav": ("WAV", "PCM_16", "audio/wav"),
                  "pcm": ("RAW", "PCM_16", "audio/L16; rate=16000; channels=1")}
"""OpenAI's response formats that libsndfile writes (aac is not among them), as (format, subtype, media type). `pcm`
is raw 16-bit little-endian mono at 16 kHz, the model's own rate (OpenAI's is 24 kHz)."""


def encode_speech(wave: np.ndarray, fmt: str) -> bytes:
    """A 16-kHz wave as the bytes of ``fmt`` (written in memory, never to a path)."""
    kind, subtype, _ = SPEECH_FORMATS[fmt]
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), SAMPLE_RATE, format=kind, subtype=subtype,
             **({"endian": "LITTLE"} if kind == "RAW" else {}))
    return buf.getvalue()


class SpeakingEngine:
    """A :class:`~speechlm.inference.speak.DiscreteRunner` answered one request at a time."""

    def __init__(self, runner, model_id: str = "speechlm", max_input_chars: int = 4096, max_units: int = 500,
                 max_frames: int = 800):
        self.runner = runner
        self.model_id = model_id
        self.max_input_chars = max_input_chars
        self.max_units = max_units  # units of one spoken answer (about 25 a second)
        self.max_frames = max_frames  # tokens of one chat answer, text and units together
        self.lock = threading.Lock()
        self.waiting = 0

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, **kw: Any) -> "SpeakingEngine":
        from speechlm.inference.speak import DiscreteRunner

        kw.setdefault("model_id", f"speechlm-{Path(checkpoint).resolve().name}")
        return cls(DiscreteRunner.from_checkpoint(checkpoint), **kw)

    @property
    def speaks(self) -> bool:
        """Whether the checkpoint has a vocoder (a model trained without one answers in text only)."""
        return self.runner.b.vocoder is not None

    def speech(self, text: str) -> np.ndarray:
        with self.lock:
            wave, _ = self.runner.tts(text, max_units=self.max_units)
        return wave

    def transcribe(self, wave: np.ndarray) -> str:
        with self.lock:
            return self.runner.asr(wave)

    def chat(self, wave: np.ndarray, want_audio: bool) -> dict[str, Any]:
        """The answer to a spoken question: its text, and with ``want_audio`` its speech: the units the model spoke
        after the text (chain of modality), else, when that answer carries none, the text answer spoken by the
        model's own TTS task (``spoken_by`` says which)."""
        from speechlm.tasks import get_task

        with self.lock:
            task = get_task(self.runner.default_chat_task())
            res = self.runner.run(task, speech={"audio": self.runner.speech_of(wave)}, max_frames=self.max_frames)
            texts = res["text"]
            out = {"task": task.name, "answer": texts[-1] if texts else "", "wave": None, "spoken_by": None}
            if want_audio and res["units"] and res["units"][-1] and self.speaks:
                out["wave"], out["spoken_by"] = self.runner.wave_of(res["units"][-1], res["frame_level"]), task.name
            elif want_audio and out["answer"].strip() and self.speaks and "tts" in self.runner.tasks:
                out["wave"], _ = self.runner.tts(out["answer"].strip(), max_units=self.max_units)
                out["spoken_by"] = "tts"
        return out


def create_speaking_app(engine: SpeakingEngine, settings: Settings = Settings()) -> FastAPI:
    """The app around a loaded speaking engine."""
    app = FastAPI(title="speechlm (speaking)", docs_url=None, redoc_url=None)
    install_common(app, settings)
    limits = settings.limits

    async def run(fn, *args):
        """``fn(*args)`` in a worker thread within the request timeout (504 past it); ``waiting`` counts callers."""
        engine.waiting += 1
        try:
            return await asyncio.wait_for(run_in_threadpool(fn, *args), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise UploadError(504, f"the request took longer than {settings.request_timeout_s:g} s", "timeout") from None
        finally:
            engine.waiting -= 1

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.model_id, "waiting": engine.waiting, "speaks": engine.speaks,
                "tasks": list(engine.runner.tasks)}

    @app.get("/v1/models")
    async def models() -> dict:
        return model_list(engine.model_id)

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        body = await json_body(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise UploadError(400, "input: the text to speak must be a non-empty string")
        if len(text) > engine.max_input_chars:
            raise UploadError(413, f"input: {len(text)} characters; this server speaks at most {engine.max_input_chars}",
                              "request_too_large")
        fmt = str(body.get("response_format") or "mp3").lower()
        if fmt not in SPEECH_FORMATS:
            raise UploadError(400, f"response_format {fmt!r} is not supported; use one of {', '.join(SPEECH_FORMATS)}")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or isinstance(speed, bool) or float(speed) != 1.0:
            raise UploadError(400, "speed: only 1.0 (the unit vocoder's durations are the model's own)")
        if not engine.speaks:
            raise UploadError(501, "this checkpoint has no vocoder: it answers in text only", "no_audio_output")
        wave = await run(engine.speech, text.strip())
        if len(wave) == 0:
            raise UploadError(500, "the model produced no speech units for this input", "no_speech")
        return Response(encode_speech(wave, fmt), media_type=SPEECH_FORMATS[fmt][2])

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form(""), response_format: str = Form("json")) -> Response:
        if response_format not in ("json", "text"):
            raise UploadError(400, f"response_format must be json or text for a discrete model, not {response_format!r}")
        data = await file.read(limits.max_upload_bytes + 1)
        wave = await run_in_threadpool(decode_audio, data, limits, "the uploaded file")
        text = await run(engine.transcribe, wave)
        return PlainTextResponse(text + "\n") if response_format == "text" else JSONResponse({"text": text})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await json_body(request)
        if body.get("stream"):
            raise UploadError(400, "stream: a discrete model's answers are not streamed; send stream: false")
        modalities = body.get("modalities") or ["text"]
        if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"} or "text" not in modalities:
            raise UploadError(400, "modalities must be [\"text\"] or [\"text\", \"audio\"]")
        want_audio = "audio" in modalities
        fmt = str((body.get("audio") or {}).get("format") or "wav").lower()
        if want_audio and fmt not in SPEECH_FORMATS:
            raise UploadError(400, f"audio.format {fmt!r} is not supported; use one of {', '.join(SPEECH_FORMATS)}")
        if want_audio and not engine.speaks:
            raise UploadError(400, "this checkpoint has no vocoder: ask for modalities [\"text\"]", "no_audio_output")
        audio_b64, afmt, _ = parse_messages(body.get("messages"))
        data = decode_base64(audio_b64, limits, "input_audio")
        wave = await run_in_threadpool(decode_audio, data, limits, f"input_audio ({afmt})")
        ans = await run(engine.chat, wave, want_audio)
        message: dict[str, Any] = {"role": "assistant", "content": ans["answer"]}
        if want_audio:
            if ans["wave"] is None or len(ans["wave"]) == 0:
                raise UploadError(500, f"the model answered without speech (task {ans['task']}, text {ans['answer']!r}): "
                                       "ask for modalities [\"text\"]", "no_speech")
            message["audio"] = {"id": f"audio_{uuid.uuid4().hex}", "data": base64.b64encode(encode_speech(ans["wave"], fmt)).decode(),
                                "transcript": ans["answer"], "expires_at": int(time.time()) + 3600,
                                "spoken_by": ans["spoken_by"]}  # chain-of-modality units, or "tts" of the text
        return JSONResponse({"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                             "model": engine.model_id,
                             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

    return app


__all__ = ["SpeakingEngine", "create_speaking_app", "encode_speech", "SPEECH_FORMATS"]

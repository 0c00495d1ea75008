"""What every speechlm HTTP app shares (speechlm.serving.app for text models, speechlm.serving.speaking for speaking
ones): settings, OpenAI-shaped errors, the API-key check, the request-body limit, and parsing a chat request's
messages into its one input_audio part and its instruction."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from speechlm.serving.batching import QueueFull
from speechlm.serving.uploads import AUDIO_FORMATS, Limits, UploadError

OPEN_PATHS = ("/", "/health", "/favicon.ico")
"""Paths served without the API key (the page asks for the key itself); /static/ too."""


@dataclass(frozen=True)
class Settings:
    api_key: str = ""
    """Empty: no key needed. Else every /v1 route needs ``Authorization: Bearer <key>``."""
    limits: Limits = field(default_factory=Limits)
    request_timeout_s: float = 120.0
    """Longest a request may wait and decode, queue time included."""


def error(status: int, message: str, code: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, by Content-Length or while it streams
    in, before the route (or the multipart parser) holds it all."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        resp = error(413, f"request body over {self.limit} bytes; this server takes at most that", "request_too_large")
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


def install_common(app: FastAPI, settings: Settings) -> None:
    """What every speechlm app shares: the API key check, the body limit, and OpenAI-shaped errors for refused
    uploads, a full queue and invalid requests."""
    key = settings.api_key.encode()

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        path = request.url.path
        if key and path not in OPEN_PATHS and not path.startswith("/static/"):
            given = request.headers.get("authorization", "")
            token = given[7:].strip().encode() if given[:7].lower() == "bearer " else b""
            if not hmac.compare_digest(token, key):  # constant time: the key is not guessable byte by byte
                return error(401, "missing or wrong API key (send Authorization: Bearer <key>)", "invalid_api_key")
        return await call_next(request)

    # base64 of the largest upload plus room for the JSON or multipart around it
    app.add_middleware(BodyLimit, limit=settings.limits.max_upload_bytes * 4 // 3 + 64 * 1024)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, e: UploadError):
        return error(e.status, e.message, e.code)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, e: QueueFull):
        return error(503, str(e), "server_busy", headers={"Retry-After": str(e.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ())[1:]) or 'body'}: {err.get('msg', '')}" for err in e.errors()]
        return error(400, "; ".join(parts) or "invalid request")


def model_list(model_id: str) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "speechlm"}]}


def parse_messages(messages: Any) -> tuple[str, str, str]:
    """The last user message's one input_audio part (base64, format) and its text parts joined (the instruction)."""
    if not isinstance(messages, list) or not messages:
        raise UploadError(400, "messages must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise UploadError(400, "messages holds no user message")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise UploadError(400, "the user message's content must be a string or a list of parts")
    texts, audios = [], []
    for p in parts:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            texts.append(str(p.get("text") or ""))
        elif kind == "input_audio":
            audios.append(p.get("input_audio") or {})
        else:
            raise UploadError(400, f"unsupported content part {kind!r}: send text and input_audio parts")
    if len(audios) != 1:
        raise UploadError(400, f"send exactly one input_audio part in the last user message (got {len(audios)}): "
                               "this model answers questions about audio")
    fmt = str(audios[0].get("format") or "wav").lower()
    if fmt not in AUDIO_FORMATS:
        raise UploadError(415, f"input_audio.format {fmt!r} is not supported; use one of {', '.join(AUDIO_FORMATS)}",
                          "unsupported_audio")
    return audios[0].get("data"), fmt, " ".join(t.strip() for t in texts if t.strip())


async def json_body(request: Request) -> dict:
    """The request body as a JSON object, else a 400 that says why."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UploadError(400, f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise UploadError(400, "the request body must be a JSON object")
    return body

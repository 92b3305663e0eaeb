"""Every refusal in one shape: ``{"error": <what was wrong>, "code", "request_id"}``.

The front door's own refusals are built that way (kb_platform.serving.errors). BentoML answers a
body that fails validation itself, with ``detail`` as pydantic's list of errors (its OpenAPI
schema says a string) and no request id; the images app and Starlette answer with their own
bodies. ``ErrorBodies`` rewrites those as they are sent: the errors joined into one sentence,
the request id added, the rest of the response left alone."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from kb_platform.serving.asgi import Message, Send
from kb_platform.serving.errors import ServingError

MAX_ERRORS = 5


def _field(location: Any) -> str:
    parts = [str(part) for part in location or () if str(part)]
    return ".".join(parts) or "request"


def _message(payload: Any, raw: bytes, status: int) -> str:
    if isinstance(payload, dict):
        detail = payload.get("detail")
        if isinstance(detail, list) and detail:  # pydantic's errors
            found = [
                f"{_field(error.get('loc'))}: {error.get('msg', 'invalid')}"
                for error in detail[:MAX_ERRORS]
                if isinstance(error, dict)
            ]
            if found:
                more = len(detail) - len(found)
                return "; ".join(found) + (f" (and {more} more)" if more > 0 else "")
        for key in ("detail", "error", "message"):
            value = payload.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    text = raw.decode("utf-8", "replace").strip()[:300]
    return text or HTTPStatus(status).phrase


def uniform_error(status: int, raw: bytes, request_id: str) -> bytes | None:
    """The error body ``raw`` in the service's shape, or None when it already is (it carries
    the request id: the front door made it)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("request_id"):
        return None
    message = _message(payload, raw, status)
    return json.dumps(ServingError(status, message).body(request_id)).encode()


class ErrorBodies:
    """A ``send`` that holds an error response (status >= 400) until its body is complete and
    sends it in the uniform shape; other responses pass at once."""

    def __init__(self, send: Send, request_id: str):
        self.send = send
        self.request_id = request_id
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        raw = b"".join(self.chunks)
        body = uniform_error(self.start["status"], raw, self.request_id)
        headers = list(self.start.get("headers", []))
        if body is not None:
            kept = {b"content-type", b"content-length"}
            headers = [(k, v) for k, v in headers if k.lower() not in kept]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": raw if body is None else body})
        self.start = None

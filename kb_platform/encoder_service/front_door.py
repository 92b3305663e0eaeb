"""The encoder service's front door (ASGI middleware in front of BentoML's routes): the internal
token, the body size limit, the request limits of /embed_texts and /embed_clip, the startup
probe, and the request id (the caller's ``X-Request-Id`` — a run's request id — or a new one,
returned in the response and on the JSON line logged for each request to a model route).

Refusals happen here, before BentoML parses a body, and per request: BentoML's adaptive batching
joins requests before the API function runs, so a bad request is refused before it can share a
batch with good ones.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from pydantic import ValidationError

from kb_platform.encoder_service.clip_models import (
    ClipItem,
    UnknownClipVersion,
    decode_image,
    export_dir,
)
from kb_platform.encoder_service.metrics import metrics
from kb_platform.encoder_service.runtime import WARM, InvalidBatch, check_request
from kb_platform.encoder_service.settings import EncoderSettings, get_encoder_settings
from kb_platform.serving.asgi import (
    ASGIApp,
    BodyTooLarge,
    Message,
    Receive,
    Scope,
    Send,
    read_body,
    replay,
)
from kb_platform.structured_logs import (
    REQUEST_ID_HEADER,
    incoming_request_id,
    reset_request_id,
    set_request_id,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("kb_platform.encoder_service.access")

OPEN = frozenset({"/livez", "/readyz"})
STARTUP_PROBE = "/healthz"  # 503 until the models are warm, then 200 (Kubernetes startupProbe)
EMBED_TEXTS = "/embed_texts"
EMBED_CLIP = "/embed_clip"
MODEL_ROUTES = frozenset({EMBED_TEXTS, EMBED_CLIP, "/model"})


class Refused(Exception):
    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def check_embed_request(body: bytes, settings: EncoderSettings) -> None:
    """A /embed_texts body must be ``{"texts": [str, ...]}`` within the service's limits."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}", "bad_json") from None
    texts = payload.get("texts") if isinstance(payload, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise Refused(400, 'the body must be {"texts": [string, ...]}', "bad_shape")
    if not texts:
        raise Refused(400, "texts is empty", "bad_shape")
    try:
        check_request(texts, settings)
    except InvalidBatch as exc:
        raise Refused(413, str(exc), "too_large") from None


def check_clip_request(body: bytes, settings: EncoderSettings) -> None:
    """A /embed_clip body must be ``{"items": [{"clip_version", "kind", "data"}, ...]}`` within
    the limits, every image readable and every checkpoint servable: a batch never fails for
    another request's item."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}", "bad_json") from None
    raw = payload.get("items") if isinstance(payload, dict) else None
    try:
        items = [ClipItem.model_validate(item) for item in raw] if isinstance(raw, list) else None
    except ValidationError:
        items = None
    if not items:
        shape = '{"items": [{"clip_version": str, "kind": "text"|"image", "data": str}, ...]}'
        raise Refused(400, f"the body must be {shape}, not empty", "bad_shape")
    if len(items) > settings.max_texts:
        limit = settings.max_texts
        raise Refused(413, f"{len(items)} items in one request; the limit is {limit}", "too_large")
    try:
        check_request([i.data for i in items if i.kind == "text"], settings)
    except InvalidBatch as exc:
        raise Refused(413, str(exc), "too_large") from None
    for item in items:
        if item.kind == "image":
            try:
                decode_image(item.data, settings.max_image_pixels)
            except ValueError as exc:
                raise Refused(400, str(exc), "bad_image") from None
    for version in {item.clip_version for item in items}:
        try:
            export_dir(version)
        except UnknownClipVersion as exc:
            raise Refused(409, str(exc), "unknown_clip_version") from None


class EncoderFrontDoor:
    def __init__(self, app: ASGIApp, settings: EncoderSettings | None = None):
        self.app = app
        self.settings = settings or get_encoder_settings()
        self.token = self.settings.secret()
        if not self.token:
            log.warning("no encoder token configured: every request except the probes is refused")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = incoming_request_id(headers.get(REQUEST_ID_HEADER))
        token = set_request_id(request_id)
        status = [500]
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id, path, headers)
        finally:
            if path in MODEL_ROUTES:
                access_log.info(
                    "%s %s %s",
                    scope.get("method"),
                    path,
                    status[0],
                    extra={
                        "path": path,
                        "status": status[0],
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            reset_request_id(token)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, path: str, headers: dict[str, str]
    ) -> None:
        try:
            if path == STARTUP_PROBE:
                await _answer(send, 200 if WARM.is_set() else 503, {"warm": WARM.is_set()})
                return
            self._authenticate(headers)
            body = await self._read_body(receive)
            if path in MODEL_ROUTES and not WARM.is_set():
                raise Refused(503, "the models are still warming up; retry shortly", "warming")
            if path == EMBED_TEXTS:
                check_embed_request(body, self.settings)
            elif path == EMBED_CLIP:
                check_clip_request(body, self.settings)
        except Refused as exc:
            metrics().refused.labels(exc.reason).inc()
            retry = [(b"retry-after", b"2")] if exc.status == 503 else []
            await _answer(send, exc.status, {"error": exc.message, "code": exc.reason}, retry)
            return
        await self.app(scope, replay(body), send)

    def _authenticate(self, headers: dict[str, str]) -> None:
        given = headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not (self.token and token and hmac.compare_digest(token, self.token)):
            raise Refused(401, "the encoder token is required (Authorization: Bearer)", "token")

    async def _read_body(self, receive: Receive) -> bytes:
        try:
            return await read_body(receive, self.settings.max_request_bytes)
        except BodyTooLarge as exc:
            raise Refused(413, str(exc), "too_large") from None


async def _answer(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})

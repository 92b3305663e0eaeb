"""The service's front door, as ASGI middleware in front of BentoML's routes: request ids, API
keys, rate limits per key and per client address (shared by the replicas through Redis when
configured: kb_platform.serving.ratelimit), request size limits, per-endpoint concurrency limits
and timeouts, a fast 503 while the circuit breaker in front of Elasticsearch is open, request
metrics and one JSON access-log line per request.

Refusals happen here, before BentoML reads or parses a body: a request without a valid key costs
a header lookup, an oversized one is refused from its Content-Length or once the bytes read pass
the limit. A request for a route that needs Elasticsearch while its breaker is open is
answered here too, with the breaker's remaining cool-down as Retry-After: it takes no thread of
the service's pool and waits on nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from kb_platform.config import get_settings
from kb_platform.resilience import registry
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
from kb_platform.serving.auth import ApiKeys, Principal
from kb_platform.serving.error_bodies import ErrorBodies
from kb_platform.serving.errors import SearchBackendUnavailable, ServingError
from kb_platform.serving.metrics import exposition, metrics
from kb_platform.serving.multipart_body import multipart_problem
from kb_platform.serving.ratelimit import Decision, FrontDoorLimiter, Limit, client_address
from kb_platform.serving.settings import ServingSettings, get_serving_settings
from kb_platform.structured_logs import (
    REQUEST_ID_HEADER,
    incoming_request_id,
    reset_request_id,
    set_request_id,
)

access_log = logging.getLogger("kb_platform.serving.access")
log = logging.getLogger(__name__)

PROBES = frozenset({"/livez", "/readyz", "/healthz"})
DOCS = frozenset({"/", "/docs.json", "/schema.json"})
API_ROUTES = frozenset({"/search", "/ask", "/ask/stream"})
FILE_FIELDS = frozenset({b"image"})
_DISPOSITION = re.compile(rb"^content-disposition:([^\r\n]*)\r?$", re.IGNORECASE | re.MULTILINE)
_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"')


def _endpoint_label(path: str) -> str:
    """A bounded label: the route, with every stored image as one."""
    if path in API_ROUTES or path in PROBES or path == "/metrics":
        return path
    return "/images" if path.startswith("/images/") else "other"


class _Slots:
    """A concurrency limit that refuses instead of queueing (the client retries elsewhere)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0

    def try_acquire(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1


def url_file_fields(body: bytes) -> list[str]:
    """File fields of a multipart body sent as plain values (BentoML would fetch a URL given
    there; the service takes uploads only)."""
    found = []
    for match in _DISPOSITION.finditer(body):
        line = match.group(1)
        name = _NAME.search(line)
        if name and name.group(1) in FILE_FIELDS and b"filename=" not in line.lower():
            found.append(name.group(1).decode())
    return found


def configure_breakers(settings: ServingSettings) -> None:
    """The service's thresholds for the process's breakers (kb_platform.resilience.registry);
    the clients that use them (Elasticsearch, the answer server) may be made before or after."""
    registry.configure("elasticsearch", settings.elasticsearch_breaker)
    registry.configure("generator", settings.generator_breaker)


def _needs_index(path: str) -> bool:
    return path in API_ROUTES or path.startswith("/images/")


class ServingMiddleware:
    def __init__(self, app: ASGIApp, settings: ServingSettings | None = None):
        self.app = app
        self.settings = settings or get_serving_settings()
        self.keys = ApiKeys.from_settings(self.settings)
        configure_breakers(self.settings)
        self.limiter = FrontDoorLimiter.from_settings(self.settings)
        self.es_breaker = registry.breaker(
            "elasticsearch", registry.target_of(get_settings().elasticsearch_url)
        )
        asks = _Slots(self.settings.ask_concurrency)  # streamed or not, one limit
        self.slots = {
            "/search": _Slots(self.settings.search_concurrency),
            "/ask": asks,
            "/ask/stream": asks,
        }
        self.timeouts = {
            "/search": self.settings.search_timeout_s,
            "/ask": self.settings.ask_timeout_s,
            "/ask/stream": self.settings.ask_timeout_s,
        }
        if not len(self.keys):
            log.warning("no API keys configured: every request except the probes is refused")

    def _is_open(self, path: str) -> bool:
        if path in PROBES:
            return True
        if path == "/metrics":
            return not self.settings.metrics_require_key
        return path in DOCS or path.startswith("/static_content/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = incoming_request_id(headers.get(REQUEST_ID_HEADER))
        token = set_request_id(request_id)
        path = scope["path"]
        state: dict[str, Any] = {
            "status": 500,
            "started": False,
            "key": None,
            "bytes_in": 0,
            "client": None,
        }
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                if state.get("closed"):
                    return
                state["status"], state["started"] = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            elif state.get("closed"):
                return
            await send(message)

        # Errors from BentoML and the images app leave in the front door's shape too.
        respond = send_with_id if self._is_open(path) else ErrorBodies(send_with_id, request_id)
        try:
            try:
                await self._handle(scope, receive, respond, path, headers, state)
            except ServingError as exc:
                metrics().rejected.labels(exc.code).inc()
                await self._error(respond, exc, request_id)
        finally:
            seconds = time.perf_counter() - started
            endpoint = _endpoint_label(path)
            metrics().requests.labels(endpoint, str(state["status"])).observe(seconds)
            access_log.info(
                "%s %s %s",
                scope.get("method"),
                path,
                state["status"],
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": state["status"],
                    "duration_ms": round(seconds * 1000, 2),
                    "api_key": state["key"],
                    "client": state["client"],
                    "bytes_in": state["bytes_in"],
                },
            )
            reset_request_id(token)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        headers: dict[str, str],
        state: dict[str, Any],
    ) -> None:
        if self._is_open(path):
            if path == "/metrics":
                await self._metrics(scope, send)
                return
            await self.app(scope, receive, send)
            return
        principal = self.keys.authenticate(headers)
        if principal is None:
            raise ServingError(
                401,
                "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        state["key"] = principal.name
        address = client_address(scope, self.settings.trusted_proxies)
        state["client"] = address
        decision = await self.limiter.check(self._limits(principal, address))
        if not decision.allowed:
            raise self._rate_limited(principal, address, decision)
        if path == "/metrics":
            await self._metrics(scope, send)
            return
        if _needs_index(path):
            wait = self.es_breaker.blocked_for(refusing=True)
            if wait is not None:
                # the why (the failures) is in the breaker's log line, not for clients
                raise SearchBackendUnavailable("circuit open", retry_after_s=wait)
        body = await self._read_body(receive, headers, state)
        if path in API_ROUTES and headers.get("content-type", "").startswith("multipart/"):
            problem = await multipart_problem(scope, body)
            if problem:
                raise ServingError(400, f"malformed multipart body: {problem}")
            fields = url_file_fields(body)
            if fields:
                raise ServingError(
                    400,
                    f"field {fields[0]!r} must be uploaded as a file part (with a filename); "
                    "the service does not fetch URLs",
                )
        replay_body = replay(body)
        slots = self.slots.get(path)
        if slots is None:
            await self.app(scope, replay_body, send)
            return
        if not slots.try_acquire():
            raise ServingError(
                503,
                f"{path} is at its concurrency limit ({slots.limit}); retry shortly",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        await self._run_with_timeout(scope, replay_body, send, path, slots, state)

    def _limits(self, principal: Principal, address: str) -> list[Limit]:
        limits = [
            Limit(
                "key",
                principal.key_id,
                principal.rate_per_s
                if principal.rate_per_s is not None
                else self.settings.rate_per_s,
                principal.burst if principal.burst is not None else self.settings.burst,
            )
        ]
        if self.settings.ip_limit is not None:
            rate, burst = self.settings.ip_limit
            limits.append(Limit("ip", address, rate, burst))
        return limits

    @staticmethod
    def _rate_limited(principal: Principal, address: str, decision: Decision) -> ServingError:
        after = decision.retry_after_header
        if decision.refused_by is not None and decision.refused_by.scope == "ip":
            message = f"rate limit of client address {address} exceeded; retry after {after}s"
        else:
            message = f"rate limit of key {principal.name!r} exceeded; retry after {after}s"
        return ServingError(429, message, headers={"Retry-After": after})

    async def _metrics(self, scope: Scope, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            raise ServingError(405, "/metrics answers GET", headers={"Allow": "GET, HEAD"})
        body, content_type = await asyncio.to_thread(exposition)  # reads the mmap'd files
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _read_body(
        self, receive: Receive, headers: dict[str, str], state: dict[str, Any]
    ) -> bytes:
        limit = self.settings.max_request_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ServingError(
                413, f"request body is {int(declared):,} bytes; the limit is {limit:,} bytes"
            )
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge as exc:
            raise ServingError(413, str(exc)) from None
        state["bytes_in"] = len(body)
        return body

    async def _run_with_timeout(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        slots: _Slots,
        state: dict[str, Any],
    ) -> None:
        task = asyncio.ensure_future(self.app(scope, receive, send))
        # The slot is held until the handler really ends, even past a timeout answer: its
        # thread cannot be killed, so it still uses the capacity the limit protects.
        task.add_done_callback(lambda _: slots.release())
        timeout = self.timeouts[path]
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if task in done:
            task.result()
            return
        if state["started"]:
            await task  # the response is under way: let it finish
            return
        task.cancel()
        await self._error(
            send,
            ServingError(504, f"{path} did not finish within {timeout:g}s", code="timeout"),
            None,
        )
        state["closed"] = True

    async def _error(self, send: Send, exc: ServingError, request_id: str | None) -> None:
        from kb_platform.structured_logs import current_request_id

        body = json.dumps(exc.body(request_id or current_request_id())).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
        ]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

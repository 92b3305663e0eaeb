"""Errors the service answers with: a status, a message that says what was wrong, headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kb_platform.resilience.circuit_breaker import retry_after_header


class ServingError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.headers = dict(headers or {})

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if request_id:
            body["request_id"] = request_id
        return body


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
    504: "timeout",
}


class SearchBackendUnavailable(ServingError):
    """503 for an index that is down; ``retry_after_s``: when the circuit breaker in front of it
    lets a call through again (an open breaker knows), else a few seconds."""

    def __init__(self, detail: str, retry_after_s: float = 5.0):
        super().__init__(
            503,
            f"the search index is unavailable ({detail}); retry later",
            code="search_unavailable",
            headers={"Retry-After": retry_after_header(retry_after_s)},
        )


class ImageSearchUnavailable(ServingError):
    def __init__(self, reason: str):
        super().__init__(
            503,
            f"image search needs a CLIP checkpoint: {reason}",
            code="clip_unavailable",
        )

"""The client the Dagster resources use to call the encoder service.

An outage (nothing listening, a timeout, 503 while warming or overloaded, 429, a proxy's 502/504)
is a ``ServiceUnavailable``: retryable, so the step backs off and heals when the service is back.
Anything else the service refuses (a bad token, a request over its limits) is a configuration or
code error and raised as such, never retried.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from kb_platform.errors import ServiceUnavailable
from kb_platform.structured_logs import REQUEST_ID_HEADER

UNAVAILABLE = frozenset({429, 502, 503, 504})


class EncoderServiceError(RuntimeError):
    """The encoder service refused a request for a reason that retrying cannot fix."""


class EncoderClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout_s: float = 60.0,
        request_id: str | None = None,
    ):
        """``request_id``: sent as ``X-Request-Id`` with every call (a run's request id)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def _post(self, route: str, body: dict[str, object]) -> object:
        try:
            response = self._http.post(route, json=body)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise ServiceUnavailable(
                f"encoder service at {self.url} did not answer ({type(exc).__name__})"
            ) from None
        if response.status_code in UNAVAILABLE:
            raise ServiceUnavailable(
                f"encoder service at {self.url} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        if response.status_code != 200:
            raise EncoderServiceError(
                f"encoder service refused {route} with {response.status_code}: "
                f"{response.text[:500]}"
            )
        return response.json()

    def model(self) -> dict[str, object]:
        info = self._post("/model", {})
        assert isinstance(info, dict)
        return info

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors("/embed_texts", {"texts": list(texts)}, len(texts))

    def embed_clip(self, items: Sequence[dict[str, str]]) -> np.ndarray:
        """CLIP vectors of ``{"clip_version", "kind": "text"|"image", "data"}`` items, in order."""
        return self._vectors("/embed_clip", {"items": list(items)}, len(items))

    def _vectors(self, route: str, body: dict[str, object], count: int) -> np.ndarray:
        vectors = np.asarray(self._post(route, body), dtype=np.float32)
        if vectors.shape[0] != count:
            raise EncoderServiceError(f"asked for {count} vectors, got {vectors.shape[0]}")
        return vectors

    def close(self) -> None:
        self._http.close()

"""The client the Dagster resources use to call the encoder service.

An outage (nothing listening, a timeout, 503 while warming or overloaded, 429, a proxy's 502/504)
is a ``ServiceUnavailable``: retryable, so the step backs off and heals when the service is back.
Anything else the service refuses (a bad token, a request over its limits) is a configuration or
code error and raised as such, never retried.

Calls go through a circuit breaker (by default the process's one for the service's address,
thresholds from ``KB_ENCODER_CLIENT_BREAKER``): once the service has failed that often, calls
raise ``ServiceUnavailable`` at once, without a connection attempt, until a probe after the
cool-down finds it back. The step's RetryPolicy retries it like any outage (it is the same
class, so a document that runs out of retries on it is no dead letter); what the breaker saves
is the wait on every call of a step, e.g. each part of a batch being split.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from kb_platform.encoder_service.settings import get_encoder_client_settings
from kb_platform.errors import ServiceUnavailable
from kb_platform.resilience import registry
from kb_platform.resilience.circuit_breaker import CircuitBreaker, CircuitOpenError
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
        breaker: CircuitBreaker | None = None,
    ):
        """``request_id``: sent as ``X-Request-Id`` with every call (a run's request id);
        ``breaker``: one of the caller's own, else the process's for this address."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self.breaker = breaker or registry.breaker(
            "encoder", registry.target_of(self.url), get_encoder_client_settings().breaker
        )

    def _post(self, route: str, body: dict[str, object]) -> object:
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            raise ServiceUnavailable(f"encoder service at {self.url}: {exc}") from None
        with permit:
            try:
                response = self._http.post(route, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                permit.failure(f"{type(exc).__name__}: {exc}")
                raise ServiceUnavailable(
                    f"encoder service at {self.url} did not answer ({type(exc).__name__})"
                ) from None
            if response.status_code in UNAVAILABLE:
                permit.failure(f"{route} answered {response.status_code}")
                raise ServiceUnavailable(
                    f"encoder service at {self.url} answered {response.status_code}: "
                    f"{response.text[:200]}"
                )
            if response.status_code < 500:
                permit.success()  # it answered; a refusal below is the request's fault
            # a 500 is neither: here it means this input broke the model (a dead letter), not
            # an outage, so it does not count towards opening the circuit
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

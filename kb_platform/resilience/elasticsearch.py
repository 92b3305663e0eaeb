"""A circuit breaker on the Elasticsearch client's transport: every call of the client (and of
the clients ``options()`` makes from it, which share its transport) goes through it.

Failures: connection errors and timeouts after the transport's own retries, and answers with
status 5xx or 429. Any other answer (a 404 of a missing alias, a 400 of a bad query) means the
cluster is up. While the circuit is open a call raises ``ElasticsearchUnavailable``, a
``ConnectionError`` of the client's own hierarchy: code that already handles an unreachable
cluster (the RAG service's 503, the pipeline's retries) handles it the same way, only sooner.
"""

from __future__ import annotations

from typing import Any

from elastic_transport import (
    ConnectionError,
    ConnectionTimeout,
    Transport,
    TransportApiResponse,
)

from kb_platform.resilience.circuit_breaker import CircuitBreaker, CircuitOpenError, failed_status


class ElasticsearchUnavailable(ConnectionError):
    """The breaker refused the call: nothing was sent to the cluster."""

    def __init__(self, cause: CircuitOpenError):
        super().__init__(str(cause))
        self.retry_after_s = cause.retry_after_s


class BreakerTransport(Transport):
    """``Transport`` with an optional ``breaker`` attribute, set after the client is made."""

    breaker: CircuitBreaker | None = None

    def perform_request(  # type: ignore[override]
        self, method: str, target: str, **kwargs: Any
    ) -> TransportApiResponse:
        breaker = self.breaker
        if breaker is None:
            return super().perform_request(method, target, **kwargs)
        try:
            permit = breaker.acquire()
        except CircuitOpenError as exc:
            raise ElasticsearchUnavailable(exc) from None
        try:
            response = super().perform_request(method, target, **kwargs)
        except (ConnectionError, ConnectionTimeout) as exc:
            permit.failure(f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:
            permit.release()  # anything else (a serialization error) proves nothing
            raise
        status = response.meta.status
        if failed_status(status):
            permit.failure(f"{method} {target.split('?')[0]} answered {status}")
        else:
            permit.success()
        return response

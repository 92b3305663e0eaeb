"""Ready means: every model loaded and warmed up, and the index alias answering. The warm-up
runs once in the background; the Elasticsearch check is live, cached for a second so a busy
probe does not turn into load on the cluster.

While the circuit breaker in front of Elasticsearch is open the service is not ready, and the
check sends nothing; once its cool-down is over the check itself is the probe that closes it
(an ``exists_alias`` is the cheapest call there is), so readiness comes back without waiting
for a user's request to try. An open breaker of the answer server leaves the service ready:
/ask still answers, extractively."""

from __future__ import annotations

import logging
import threading
import time

from elasticsearch import Elasticsearch

from kb_platform.resilience.circuit_breaker import CircuitBreaker
from kb_platform.resilience.elasticsearch import BreakerTransport

log = logging.getLogger(__name__)


class Readiness:
    def __init__(self, es: Elasticsearch, alias: str, *, cache_s: float = 1.0):
        self._es = es.options(request_timeout=1.0, max_retries=0)
        self.alias = alias
        self.cache_s = cache_s
        self.warm = threading.Event()
        self.warmup_error: str | None = None
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._index_ok = False
        self._detail = "not checked yet"

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker of the client's transport (the service's calls share it)."""
        transport = self._es.transport
        return transport.breaker if isinstance(transport, BreakerTransport) else None

    def index_status(self) -> tuple[bool, str]:
        with self._lock:
            # an open breaker is known at once, without a call (and ahead of the cached answer)
            breaker = self.breaker
            wait = breaker.blocked_for() if breaker is not None else None
            if wait is not None:
                assert breaker is not None
                detail = f"Elasticsearch circuit open ({breaker.reason}); next probe in {wait:.0f}s"
                self._checked_at, self._index_ok, self._detail = -float("inf"), False, detail
                return False, detail
            if time.monotonic() - self._checked_at < self.cache_s:
                return self._index_ok, self._detail
            try:
                ok = bool(self._es.indices.exists_alias(name=self.alias))
                detail = "ok" if ok else f"alias {self.alias} does not exist"
            except Exception as exc:  # any transport failure means not ready
                ok, detail = False, f"Elasticsearch unreachable: {type(exc).__name__}"
            if not ok and detail != self._detail:
                log.warning("index %s not available: %s", self.alias, detail)
            elif ok and not self._index_ok:
                log.info("index %s available", self.alias)
            self._checked_at, self._index_ok, self._detail = time.monotonic(), ok, detail
            return ok, detail

    def is_ready(self) -> bool:
        if not self.warm.is_set() or self.warmup_error:
            return False
        return self.index_status()[0]

"""Per-key token buckets: ``rate`` requests per second sustained, ``burst`` at once.

State is per worker process: with N workers a key gets up to N times the rate. The service runs
one worker by default (threads inside it), so the limit is exact; behind several replicas, set
the limit per replica or rate-limit at the ingress as well.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    remaining: int = 0

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def check(
        self, key: str, rate_per_s: float | None = None, burst: int | None = None
    ) -> Decision:
        """Takes one token from the key's bucket, or says how long until one is there."""
        rate = rate_per_s if rate_per_s is not None else self.rate_per_s
        capacity = float(burst if burst is not None else self.burst)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._buckets.clear()  # bounded memory; only configured keys get here
                bucket = self._buckets[key] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return Decision(True, remaining=int(bucket.tokens))
            wait = (1.0 - bucket.tokens) / rate if rate > 0 else math.inf
            return Decision(False, retry_after_s=wait)

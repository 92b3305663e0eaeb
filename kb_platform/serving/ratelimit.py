"""Rate limits: token buckets (``rate`` requests per second sustained, ``burst`` at once) per API
key and, when configured, per client address; a request takes a token from each of its buckets,
or from none when one is empty.

With ``KB_SERVING_RATE_LIMIT_REDIS_URL`` the buckets live in Redis and every replica takes from
the same ones (kb_platform.resilience.redis_buckets), so a key gets its rate once, however many
replicas serve it. Without it, or while Redis cannot be reached, each worker keeps its own
buckets (``RateLimiter``): with N replicas a key then gets up to N times its rate.

Redis unreachable means local buckets, not refusals and not no limits: the limits protect the
service's capacity, they are not what decides who may use it (the keys do, and they are
checked either way). Refusing every request while Redis is down would make the limiter an
outage of its own; dropping the limits would leave a runaway client unchecked just when the
service is degraded. Per-replica buckets keep every client within N times its rate, a bound
the operator knows. The switch is logged once each way and counted
(``kb_serving_rate_limit_local_decisions``, ``kb_serving_rate_limit_shared``); a circuit
breaker (dependency ``redis``) keeps requests from waiting on a Redis that is down, and its
probe finds Redis back.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from kb_platform.resilience import registry
from kb_platform.resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitOpenError,
    retry_after_header,
)
from kb_platform.serving.settings import ServingSettings

if TYPE_CHECKING:  # imported once a Redis URL is configured: the package is needed only then
    from kb_platform.resilience.redis_buckets import RedisBuckets

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Limit:
    """One bucket a request takes from: ``scope`` ("key" or "ip") and whose it is."""

    scope: str
    subject: str
    rate_per_s: float
    burst: int

    @property
    def bucket(self) -> str:
        return f"{self.scope}:{self.subject}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    remaining: int = 0
    refused_by: Limit | None = None  # the limit whose bucket was empty
    shared: bool = False  # decided by the shared buckets (Redis)

    @property
    def retry_after_header(self) -> str:
        if math.isinf(self.retry_after_s):
            return "3600"
        return retry_after_header(self.retry_after_s)


class RateLimiter:
    """This process's buckets."""

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
        return self.check_all([Limit("key", key, rate, burst if burst is not None else self.burst)])

    def check_all(self, limits: Sequence[Limit]) -> Decision:
        """One token from each limit's bucket, or none when any is empty."""
        now = self._clock()
        with self._lock:
            buckets = [self._refilled(limit, now) for limit in limits]
            worst: tuple[float, Limit] | None = None
            for limit, bucket in zip(limits, buckets, strict=True):
                if bucket.tokens < 1.0:
                    rate = limit.rate_per_s
                    wait = (1.0 - bucket.tokens) / rate if rate > 0 else math.inf
                    if worst is None or wait > worst[0]:
                        worst = (wait, limit)
            if worst is not None:
                return Decision(False, retry_after_s=worst[0], refused_by=worst[1])
            for bucket in buckets:
                bucket.tokens -= 1.0
            return Decision(True, remaining=int(min(b.tokens for b in buckets)))

    def _refilled(self, limit: Limit, now: float) -> _Bucket:
        bucket = self._buckets.get(limit.bucket)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory (addresses are unbounded)
            bucket = self._buckets[limit.bucket] = _Bucket(float(limit.burst), now)
        bucket.tokens = min(
            float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.rate_per_s
        )
        bucket.updated = now
        return bucket


@dataclass(frozen=True)
class _Metrics:
    local_decisions: Counter
    shared: Gauge
    refused: Counter


@lru_cache(maxsize=1)
def _metrics() -> _Metrics:
    return _Metrics(
        local_decisions=Counter(
            "kb_serving_rate_limit_local_decisions",
            "rate-limit decisions taken by this replica's own buckets because the shared store "
            "(Redis) is configured but could not be used",
        ),
        shared=Gauge(
            "kb_serving_rate_limit_shared",
            "1 while rate limits are shared through Redis, 0 while falling back to this "
            "replica's buckets (absent when no Redis is configured)",
            multiprocess_mode="livemin",
        ),
        refused=Counter(
            "kb_serving_rate_limited_requests",
            "requests refused by a rate limit, by the limit's scope (key or ip)",
            ["scope"],
        ),
    )


class FrontDoorLimiter:
    """The shared buckets when configured and reachable, this worker's own otherwise."""

    def __init__(
        self,
        local: RateLimiter,
        shared: RedisBuckets | None = None,
        breaker: CircuitBreaker | None = None,
        *,
        where: str = "",
    ):
        self.local = local
        self.shared = shared
        self.breaker = breaker
        self.where = where
        self._sharing: bool | None = None  # None: no decision yet
        if shared is not None:
            _metrics().shared.set(1)

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> FrontDoorLimiter:
        local = RateLimiter(settings.rate_per_s, settings.burst)
        url = settings.rate_limit_redis_url
        if url is None:
            return cls(local)
        from kb_platform.resilience.redis_buckets import RedisBuckets

        target = registry.target_of(url)
        shared = RedisBuckets(
            url,
            password=settings.redis_password(),
            timeout_s=settings.rate_limit_redis_timeout_s,
            prefix=settings.rate_limit_redis_prefix,
        )
        breaker = registry.breaker("redis", target, settings.rate_limit_redis_breaker)
        log.info("rate limits shared through Redis at %s", target)
        return cls(local, shared, breaker, where=target)

    async def check(self, limits: Sequence[Limit]) -> Decision:
        decision = await self._decide(limits)
        if not decision.allowed and decision.refused_by is not None:
            _metrics().refused.labels(decision.refused_by.scope).inc()
        return decision

    async def _decide(self, limits: Sequence[Limit]) -> Decision:
        if self.shared is None:
            return self.local.check_all(limits)
        assert self.breaker is not None
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            return self._fall_back(limits, str(exc))
        from kb_platform.resilience.redis_buckets import Bucket, SharedStoreUnavailable

        with permit:
            try:
                taken = await self.shared.take(
                    [Bucket(x.bucket, x.rate_per_s, x.burst) for x in limits]
                )
            except SharedStoreUnavailable as exc:
                permit.failure(str(exc))
                return self._fall_back(limits, str(exc))
            permit.success()
        self._sharing_again()
        refused = limits[taken.refused_index] if taken.refused_index is not None else None
        return Decision(
            taken.allowed, taken.retry_after_s, taken.remaining, refused_by=refused, shared=True
        )

    def _fall_back(self, limits: Sequence[Limit], reason: str) -> Decision:
        if self._sharing is not False:
            self._sharing = False
            _metrics().shared.set(0)
            log.warning(
                "rate limits fall back to this replica's own buckets: Redis at %s cannot be "
                "used (%s)",
                self.where,
                reason,
            )
        _metrics().local_decisions.inc()
        return self.local.check_all(limits)

    def _sharing_again(self) -> None:
        if self._sharing is not True:
            if self._sharing is False:
                log.info("rate limits shared through Redis at %s again", self.where)
            self._sharing = True
            _metrics().shared.set(1)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()


def parse_address(text: str) -> IPAddress | None:
    """An address from a peer or an X-Forwarded-For entry (IPv4-mapped IPv6 as IPv4)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_for(raw_headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every X-Forwarded-For entry, in order (a request may carry the header more than once)."""
    entries: list[str] = []
    for name, value in raw_headers:
        if name.lower() == b"x-forwarded-for":
            entries += [e for e in value.decode("latin-1").split(",") if e.strip()]
    return entries


def client_address(scope: dict[str, Any] | Any, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the entries of
    X-Forwarded-For are walked from the right (the nearest hop) past every trusted proxy, and the
    first address that is not one is the client. A client can write what it likes into the
    header, but only to the left of what the trusted proxies append, so it cannot pass as
    anyone else."""
    client = scope.get("client")
    peer_text = str(client[0]) if client else ""
    current = parse_address(peer_text)
    if current is None:
        return peer_text or "unknown"
    if not trusted:
        return str(current)
    hops = forwarded_for(scope.get("headers", []))
    while hops and any(current in network for network in trusted):
        previous = parse_address(hops.pop())
        if previous is None:
            break  # a malformed entry: the proxy that passed it on is the last we know
        current = previous
    return str(current)

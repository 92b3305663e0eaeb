"""A circuit breaker around calls to one dependency (Elasticsearch, the encoder service, an answer
server, Redis).

closed     calls go through; transient failures (connection refused, timeouts, 5xx, 429) are
           counted; ``failure_threshold`` of them in a row, or a ``failure_ratio`` of the last
           ``window`` calls, open it. An answer that is the caller's fault (a 4xx) is a success:
           the dependency is up and said so.
open       calls fail at once with ``CircuitOpenError`` (nothing is sent) for ``cooldown_s``.
half-open  after the cool-down, up to ``half_open_probes`` calls go through as probes; when that
           many succeed it closes, the first failure opens it again for another cool-down.

A caller takes a ``Permit`` (``with breaker.acquire() as permit:``) and reports what the call
showed: ``permit.success()``, ``permit.failure(detail)``, or nothing (a neutral outcome, e.g. an
error of the caller's own code), which only frees a probe's slot when the block ends. Outcomes
of permits taken before the last state change are ignored: a slow call that started while
closed cannot close a breaker that has opened since. Thread-safe; the lock is held for
bookkeeping only, never while a call runs, so async code may use it as well.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kb_platform.resilience.metrics import breaker_metrics

log = logging.getLogger(__name__)


class State(IntEnum):
    """The values of the ``kb_circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class BreakerConfig(BaseModel):
    """A breaker's thresholds; a field of the settings of whoever calls the dependency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1)  # transient failures in a row that open it
    failure_ratio: float | None = Field(default=None, gt=0, le=1)  # or this share of ...
    window: int = Field(default=20, ge=1)  # ... the last `window` calls,
    min_calls: int = Field(default=10, ge=1)  # once at least this many are in the window
    cooldown_s: float = Field(default=10.0, gt=0)  # open this long before a probe
    half_open_probes: int = Field(default=1, ge=1)  # successful probes that close it

    @model_validator(mode="after")
    def _window_holds_min_calls(self) -> BreakerConfig:
        if self.failure_ratio is not None and self.min_calls > self.window:
            raise ValueError(f"min_calls ({self.min_calls}) exceeds window ({self.window})")
        return self


def failed_status(status: int) -> bool:
    """An HTTP status that says the dependency is failing (5xx) or shedding load (429), not
    that the request was wrong."""
    return status >= 500 or status == 429


def retry_after_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class CircuitOpenError(Exception):
    """The breaker refused the call without making it; ``retry_after_s``: until the next probe."""

    def __init__(self, dependency: str, target: str, retry_after_s: float, reason: str):
        where = f"{dependency} at {target}" if target else dependency
        super().__init__(f"circuit open for {where} ({reason}); next try in {retry_after_s:.1f}s")
        self.dependency = dependency
        self.target = target
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        return retry_after_header(self.retry_after_s)


@dataclass(frozen=True)
class BreakerStats:
    """What the breaker saw since it was made (the test's and an operator's view)."""

    state: State
    admitted: int  # calls let through (each may have reached the dependency)
    short_circuited: int  # calls refused without reaching it
    successes: int
    failures: int
    opened: int  # times it opened


class Permit:
    """One admitted call; report its outcome once (later reports are ignored)."""

    __slots__ = ("_breaker", "_done", "_generation", "_probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool):
        self._breaker = breaker
        self._generation = generation
        self._probe = probe
        self._done = False

    @property
    def probe(self) -> bool:
        return self._probe

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def success(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self._probe, ok=True, detail="")

    def failure(self, detail: str = "") -> None:
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self._probe, ok=False, detail=detail)

    def release(self) -> None:
        """Neither: the call proved nothing about the dependency (it frees a probe's slot)."""
        if not self._done:
            self._done = True
            self._breaker._settle(self._generation, self._probe, ok=None, detail="")


class CircuitBreaker:
    def __init__(
        self,
        dependency: str,
        target: str = "",
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.dependency = dependency
        self.target = target
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._reason = ""
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=self.config.window)  # True: a failure
        self._probes_out = 0
        self._probes_ok = 0
        self._admitted = self._short = self._successes = self._failures = self._opened = 0
        self._metrics = breaker_metrics()
        self._metrics.state.labels(dependency, target).set(State.CLOSED)

    # the caller's side

    def acquire(self) -> Permit:
        """A permit for one call, or ``CircuitOpenError`` at once."""
        with self._lock:
            if not self.config.enabled:
                self._admitted += 1
                return Permit(self, -1, probe=False)
            if self._state is State.OPEN and self._clock() - self._opened_at >= (
                self.config.cooldown_s
            ):
                self._move(State.HALF_OPEN)
            if self._state is State.CLOSED:
                self._admitted += 1
                return Permit(self, self._generation, probe=False)
            if self._state is State.HALF_OPEN and (
                self._probes_out + self._probes_ok < self.config.half_open_probes
            ):
                self._probes_out += 1
                self._admitted += 1
                return Permit(self, self._generation, probe=True)
            wait = self._wait_locked()
            self._short += 1
            reason = self._reason
        self._metrics.short_circuited.labels(self.dependency, self.target).inc()
        raise CircuitOpenError(self.dependency, self.target, wait, reason)

    def call(self, fn: Callable[[], object], is_failure: Callable[[BaseException], bool]) -> object:
        """``fn()`` under a permit: it returning is a success, an exception for which
        ``is_failure`` holds a failure, any other exception neutral."""
        with self.acquire() as permit:
            try:
                result = fn()
            except BaseException as exc:
                if is_failure(exc):
                    permit.failure(f"{type(exc).__name__}: {exc}")
                raise
            permit.success()
            return result

    def blocked_for(self, *, refusing: bool = False) -> float | None:
        """None when a call would be let through now, else the seconds until one would be:
        the rest of the cool-down, or (half-open, its probes out) a second. ``refusing``: the
        caller turns the request away when blocked (a front door shedding load before it
        reaches the call), so it counts as short-circuited."""
        with self._lock:
            wait = self._blocked_locked()
            if wait is None or not refusing:
                return wait
            self._short += 1
        self._metrics.short_circuited.labels(self.dependency, self.target).inc()
        return wait

    def _blocked_locked(self) -> float | None:
        if not self.config.enabled or self._state is State.CLOSED:
            return None
        if self._state is State.OPEN:
            wait = self.config.cooldown_s - (self._clock() - self._opened_at)
            return wait if wait > 0 else None
        if self._probes_out + self._probes_ok < self.config.half_open_probes:
            return None
        return self._wait_locked()

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    @property
    def reason(self) -> str:
        """Why it last opened (the last failure's detail)."""
        with self._lock:
            return self._reason

    def stats(self) -> BreakerStats:
        with self._lock:
            return BreakerStats(
                self._state,
                self._admitted,
                self._short,
                self._successes,
                self._failures,
                self._opened,
            )

    def reconfigure(self, config: BreakerConfig) -> None:
        with self._lock:
            if config == self.config:
                return
            self.config = config
            self._recent = deque(self._recent, maxlen=config.window)

    # bookkeeping (under the lock)

    def _wait_locked(self) -> float:
        if self._state is State.OPEN:
            return max(0.0, self.config.cooldown_s - (self._clock() - self._opened_at))
        return 1.0  # half-open with its probes out: they finish within their call's timeout

    def _settle(self, generation: int, probe: bool, *, ok: bool | None, detail: str) -> None:
        outcome = {True: "success", False: "failure", None: "neutral"}[ok]
        self._metrics.calls.labels(self.dependency, self.target, outcome).inc()
        with self._lock:
            if ok is True:
                self._successes += 1
            elif ok is False:
                self._failures += 1
            if generation != self._generation:
                return  # taken before the last state change: says nothing about this one
            if self._state is State.HALF_OPEN and probe:
                self._probes_out -= 1
                if ok is True:
                    self._probes_ok += 1
                    if self._probes_ok >= self.config.half_open_probes:
                        self._move(State.CLOSED)
                elif ok is False:
                    self._reason = detail or "probe failed"
                    self._move(State.OPEN)
            elif self._state is State.CLOSED and ok is not None:
                self._record_closed(failed=not ok, detail=detail)

    def _record_closed(self, *, failed: bool, detail: str) -> None:
        self._recent.append(failed)
        self._consecutive = self._consecutive + 1 if failed else 0
        if not failed:
            return
        config = self._config_trips()
        if config:
            self._reason = f"{config}; last: {detail}" if detail else config
            self._move(State.OPEN)

    def _config_trips(self) -> str:
        config = self.config
        if self._consecutive >= config.failure_threshold:
            return f"{self._consecutive} failures in a row"
        if config.failure_ratio is not None and len(self._recent) >= config.min_calls:
            failed = sum(self._recent)
            if failed / len(self._recent) >= config.failure_ratio:
                return f"{failed} of the last {len(self._recent)} calls failed"
        return ""

    def _move(self, state: State) -> None:
        previous, self._state = self._state, state
        self._generation += 1
        self._probes_out = self._probes_ok = 0
        if state is State.OPEN:
            self._opened_at = self._clock()
            self._opened += 1
        if state is State.CLOSED:
            self._consecutive = 0
            self._recent.clear()
        self._metrics.state.labels(self.dependency, self.target).set(state)
        self._metrics.transitions.labels(self.dependency, self.target, state.name.lower()).inc()
        where = f"{self.dependency} at {self.target}" if self.target else self.dependency
        extra = {"dependency": self.dependency, "target": self.target, "state": state.name}
        if state is State.OPEN:
            log.warning(
                "circuit for %s open for %.1fs: %s",
                where,
                self.config.cooldown_s,
                self._reason,
                extra=extra,
            )
        elif previous is State.HALF_OPEN and state is State.CLOSED:
            log.info("circuit for %s closed: the probe succeeded", where, extra=extra)
        else:
            log.info("circuit for %s %s", where, state.name.lower().replace("_", "-"), extra=extra)

"""The circuit breaker's state machine (kb_platform.resilience.circuit_breaker), on a clock the
test moves: closed -> open after consecutive failures or a failure ratio, fast refusals while
open, one probe when half-open, closed again on its success, open again on its failure; stale
outcomes ignored, thread safety, the settings that are refused, and the metrics it exports."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from kb_platform.resilience import registry
from kb_platform.resilience.circuit_breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    State,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, target: str, **config: object) -> CircuitBreaker:
    defaults: dict[str, object] = {"failure_threshold": 3, "cooldown_s": 10.0}
    return CircuitBreaker("unit", target, BreakerConfig(**{**defaults, **config}), clock=clock)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with breaker.acquire() as permit:
            permit.failure("ConnectError: refused")


def succeed(breaker: CircuitBreaker) -> None:
    with breaker.acquire() as permit:
        permit.success()


def gauge(target: str) -> float | None:
    return REGISTRY.get_sample_value(
        "kb_circuit_breaker_state", {"dependency": "unit", "target": target}
    )


def test_opens_after_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = make(clock, "consecutive")
    fail(breaker, 2)
    succeed(breaker)  # the run of failures is broken
    fail(breaker, 2)
    assert breaker.state is State.CLOSED and gauge("consecutive") == 0
    fail(breaker)
    assert breaker.state is State.OPEN and gauge("consecutive") == 2
    assert "3 failures in a row" in breaker.reason and "ConnectError" in breaker.reason


def test_open_refuses_at_once_with_the_rest_of_the_cool_down() -> None:
    clock = Clock()
    breaker = make(clock, "open")
    fail(breaker, 3)
    admitted = breaker.stats().admitted
    clock.now += 4
    for _ in range(5):
        with pytest.raises(CircuitOpenError) as refused:
            breaker.acquire()
    assert refused.value.retry_after_s == pytest.approx(6.0)
    assert refused.value.retry_after_header == "6"
    assert breaker.blocked_for() == pytest.approx(6.0)
    stats = breaker.stats()
    assert stats.admitted == admitted and stats.short_circuited == 5 and stats.opened == 1
    short = REGISTRY.get_sample_value(
        "kb_circuit_breaker_short_circuited_calls_total", {"dependency": "unit", "target": "open"}
    )
    assert short == 5


def test_a_front_door_refusing_while_open_counts_as_short_circuited() -> None:
    clock = Clock()
    breaker = make(clock, "front-door")
    assert breaker.blocked_for(refusing=True) is None  # closed: nothing to refuse
    fail(breaker, 3)
    assert breaker.blocked_for() == pytest.approx(10.0)  # asking is not refusing
    assert breaker.blocked_for(refusing=True) == pytest.approx(10.0)
    assert breaker.stats().short_circuited == 1


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    clock = Clock()
    breaker = make(clock, "probe-ok")
    fail(breaker, 3)
    clock.now += 10
    assert breaker.blocked_for() is None  # the cool-down is over: a call may probe
    probe = breaker.acquire()
    assert probe.probe and breaker.state is State.HALF_OPEN and gauge("probe-ok") == 1
    with pytest.raises(CircuitOpenError):  # one probe at a time
        breaker.acquire()
    assert breaker.blocked_for() == 1.0
    probe.success()
    assert breaker.state is State.CLOSED and gauge("probe-ok") == 0
    fail(breaker, 2)  # the count starts afresh after closing
    assert breaker.state is State.CLOSED


def test_a_failed_probe_opens_it_for_another_full_cool_down() -> None:
    clock = Clock()
    breaker = make(clock, "probe-fails")
    fail(breaker, 3)
    clock.now += 12
    fail(breaker)  # the probe
    assert breaker.state is State.OPEN and breaker.stats().opened == 2
    assert breaker.blocked_for() == pytest.approx(10.0)


def test_several_probes_must_all_succeed() -> None:
    clock = Clock()
    breaker = make(clock, "probes", half_open_probes=2)
    fail(breaker, 3)
    clock.now += 10
    first, second = breaker.acquire(), breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    first.success()
    assert breaker.state is State.HALF_OPEN
    second.success()
    assert breaker.state is State.CLOSED


def test_a_neutral_probe_frees_its_slot_without_deciding() -> None:
    clock = Clock()
    breaker = make(clock, "neutral")
    fail(breaker, 3)
    clock.now += 10
    with breaker.acquire():
        pass  # e.g. our own code failed before the call: it proved nothing
    assert breaker.state is State.HALF_OPEN
    succeed(breaker)
    assert breaker.state is State.CLOSED


def test_outcomes_of_calls_begun_before_a_state_change_are_ignored() -> None:
    clock = Clock()
    breaker = make(clock, "stale")
    slow = breaker.acquire()  # a long call begun while closed
    fail(breaker, 3)
    clock.now += 10
    probe = breaker.acquire()
    slow.success()  # it cannot close a breaker that opened after it began
    assert breaker.state is State.HALF_OPEN
    probe.failure("still down")
    assert breaker.state is State.OPEN


def test_failure_ratio_over_a_window_opens_it() -> None:
    clock = Clock()
    breaker = make(clock, "ratio", failure_threshold=100, failure_ratio=0.5, window=10, min_calls=6)
    for _ in range(2):
        succeed(breaker)
        fail(breaker, 1)
    assert breaker.state is State.CLOSED  # 2 of 4: fewer calls than min_calls
    succeed(breaker)
    fail(breaker)  # 3 of 6
    assert breaker.state is State.OPEN and "3 of the last 6 calls failed" in breaker.reason


def test_call_counts_only_the_failures_it_is_told_are_failures() -> None:
    clock = Clock()
    breaker = make(clock, "call", failure_threshold=1)
    with pytest.raises(ValueError):
        breaker.call(lambda: int("x"), is_failure=lambda exc: isinstance(exc, TimeoutError))
    assert breaker.state is State.CLOSED

    def times_out() -> None:
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):
        breaker.call(times_out, is_failure=lambda exc: isinstance(exc, TimeoutError))
    assert breaker.state is State.OPEN


def test_disabled_breaker_lets_everything_through() -> None:
    clock = Clock()
    breaker = make(clock, "disabled", enabled=False)
    fail(breaker, 10)
    assert breaker.state is State.CLOSED and breaker.blocked_for() is None


def test_threads_hammering_it_leave_consistent_counts() -> None:
    clock = Clock()
    breaker = make(clock, "threads", failure_ratio=0.3, window=20, min_calls=10)
    start = threading.Barrier(8)
    refused = [0] * 8

    def work(n: int) -> None:
        start.wait()
        for i in range(500):
            try:
                with breaker.acquire() as permit:
                    if (i + n) % 3:
                        permit.success()
                    else:
                        permit.failure()
            except CircuitOpenError:
                refused[n] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = breaker.stats()
    assert stats.admitted + stats.short_circuited == 8 * 500
    assert stats.short_circuited == sum(refused)
    assert stats.successes + stats.failures == stats.admitted
    assert stats.state is State.OPEN and stats.opened == 1 and stats.short_circuited > 0


@pytest.mark.parametrize(
    "config",
    [
        {"failure_threshold": 0},
        {"cooldown_s": 0},
        {"failure_ratio": 1.5},
        {"failure_ratio": 0.5, "window": 5, "min_calls": 6},
        {"half_open_probes": 0},
        {"unknown": 1},
    ],
)
def test_bad_settings_are_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BreakerConfig(**config)  # type: ignore[arg-type]


def test_the_registry_shares_one_breaker_per_endpoint_and_applies_settings() -> None:
    first = registry.breaker("unit-registry", registry.target_of("http://user:pw@es.local:9200/x"))
    assert first.target == "es.local:9200"
    assert registry.breaker("unit-registry", "es.local:9200") is first
    assert registry.breaker("unit-registry", "other:9200") is not first
    registry.configure("unit-registry", BreakerConfig(failure_threshold=2))
    assert first.config.failure_threshold == 2
    assert registry.target_of("redis://127.0.0.1/0") == "127.0.0.1:6379"
    assert registry.target_of("http://[::1]:3000") == "[::1]:3000"

"""Prometheus metrics of the circuit breakers, in the process's default registry (the RAG
service's /metrics serves them; in BentoML's multiprocess mode, every worker's).

Made on first use, not at import (as kb_platform.serving.metrics: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in its workers after importing the service). Labels: the
dependency (``elasticsearch``, ``encoder``, ``generator``, ``redis``) and its endpoint
(``host:port``), bounded by configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import Counter, Gauge

LABELS = ("dependency", "target")


@dataclass(frozen=True)
class BreakerMetrics:
    state: Gauge
    transitions: Counter
    calls: Counter
    short_circuited: Counter


@lru_cache(maxsize=1)
def breaker_metrics() -> BreakerMetrics:
    return BreakerMetrics(
        state=Gauge(
            "kb_circuit_breaker_state",
            "circuit breaker state per dependency: 0 closed, 1 half-open, 2 open",
            LABELS,
            multiprocess_mode="livemax",
        ),
        transitions=Counter(
            "kb_circuit_breaker_transitions",
            "circuit breaker state changes, by the state entered",
            [*LABELS, "state"],
        ),
        calls=Counter(
            "kb_circuit_breaker_calls",
            "calls a breaker let through, by what they showed (success, failure, neutral)",
            [*LABELS, "outcome"],
        ),
        short_circuited=Counter(
            "kb_circuit_breaker_short_circuited_calls",
            "calls refused by an open circuit breaker without reaching the dependency",
            LABELS,
        ),
    )

"""Prometheus metrics of the RAG service, served on ``/metrics`` by its own middleware
(BentoML's metrics are off in the service: its per-request instruments cost ~3 % of the
service's throughput and duplicated ``kb_serving_request_seconds``).

Created on first use, not at import: BentoML workers set ``PROMETHEUS_MULTIPROC_DIR`` after the
service module is imported, and metrics made before that would not reach ``/metrics``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class ServingMetrics:
    requests: Histogram
    retrieval: Histogram
    generation: Histogram
    first_token: Histogram
    tokens: Counter
    answers: Counter
    warmup: Gauge
    model_load: Gauge
    query_encoder: Gauge
    ready: Gauge
    rejected: Counter


@lru_cache(maxsize=1)
def metrics() -> ServingMetrics:
    return ServingMetrics(
        requests=Histogram(
            "kb_serving_request_seconds",
            "HTTP request latency by endpoint and status",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
        ),
        retrieval=Histogram(
            "kb_serving_retrieval_seconds",
            "retrieval time (query encoding and Elasticsearch) by mode",
            ["mode"],
            buckets=LATENCY_BUCKETS,
        ),
        generation=Histogram(
            "kb_serving_generation_seconds",
            "answer generation time by generator and finish reason",
            ["generator", "finish_reason"],
            buckets=LATENCY_BUCKETS,
        ),
        first_token=Histogram(
            "kb_serving_first_token_seconds",
            "time from the start of an answer's generation to its first text piece",
            ["generator"],
            buckets=LATENCY_BUCKETS,
        ),
        tokens=Counter(
            "kb_serving_generated_tokens", "tokens generated for answers", ["generator"]
        ),
        answers=Counter(
            "kb_serving_answers", "answers by kind (generated, refused or extractive)", ["kind"]
        ),
        warmup=Gauge(
            "kb_serving_warmup_seconds",
            "seconds the warm-up of each component took (load and first inference)",
            ["component"],
            multiprocess_mode="max",
        ),
        model_load=Gauge(
            "kb_serving_model_load_seconds",
            "seconds loading each model took",
            ["model"],
            multiprocess_mode="max",
        ),
        query_encoder=Gauge(
            "kb_serving_query_encoder_info",
            "the query encoder in use (1): its vectors' model version and its runtime",
            ["version", "runtime"],
            multiprocess_mode="max",
        ),
        ready=Gauge(
            "kb_serving_ready",
            "1 when warm and Elasticsearch is reachable, else 0",
            multiprocess_mode="livemin",
        ),
        rejected=Counter(
            "kb_serving_rejected_requests",
            "requests refused before reaching an endpoint, by reason",
            ["reason"],
        ),
    )


def exposition() -> tuple[bytes, str]:
    """The text /metrics serves and its content type: every worker's values when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (BentoML sets it for its workers), else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

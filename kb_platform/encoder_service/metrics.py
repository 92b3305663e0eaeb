"""Prometheus metrics of the encoder service (made on first use, after BentoML set up its
multiprocess directory; see kb_platform.serving.metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class EncoderMetrics:
    batch_texts: Histogram
    inference: Histogram
    texts: Counter
    clip_batch_items: Histogram
    clip_items: Counter
    refused: Counter
    warmup: Gauge
    model_load: Gauge
    ready: Gauge


@lru_cache(maxsize=1)
def metrics() -> EncoderMetrics:
    return EncoderMetrics(
        batch_texts=Histogram(
            "kb_encoder_batch_texts",
            "texts in each batch the model encoded (adaptive batching joins requests)",
            ["model"],
            buckets=BATCH_BUCKETS,
        ),
        inference=Histogram(
            "kb_encoder_inference_seconds",
            "model time per batch",
            ["model"],
            buckets=SECONDS_BUCKETS,
        ),
        texts=Counter("kb_encoder_texts", "texts encoded", ["model"]),
        clip_batch_items=Histogram(
            "kb_encoder_clip_batch_items",
            "CLIP texts and images in each batch the model encoded",
            buckets=BATCH_BUCKETS,
        ),
        clip_items=Counter(
            "kb_encoder_clip_items", "CLIP texts and images encoded", ["model", "kind"]
        ),
        refused=Counter(
            "kb_encoder_refused_requests", "requests refused at the front door", ["reason"]
        ),
        warmup=Gauge(
            "kb_encoder_warmup_seconds",
            "seconds of each warm-up step (load and first inference)",
            ["component"],
            multiprocess_mode="max",
        ),
        model_load=Gauge(
            "kb_encoder_model_load_seconds",
            "seconds loading each model took",
            ["model"],
            multiprocess_mode="max",
        ),
        ready=Gauge(
            "kb_encoder_ready", "1 when every model is warm, else 0", multiprocess_mode="livemin"
        ),
    )

"""What the encoder service does behind HTTP: load and warm the models in the background, say
whether it is warm, encode batches with their metrics. One runtime per worker process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kb_platform.encoder_service import clip_models
from kb_platform.encoder_service.clip_models import ClipItem
from kb_platform.encoder_service.metrics import metrics
from kb_platform.encoder_service.settings import EncoderSettings
from kb_platform.models import registry

if TYPE_CHECKING:
    from kb_platform.models.text_encoder import TextEncoder

log = logging.getLogger(__name__)

# Set once this process's models are loaded and have run a real inference: the startup probe
# (/healthz) and the readiness probe (/readyz) answer from it.
WARM = threading.Event()


class InvalidBatch(ValueError):
    """A request the service will not encode (too many texts, a text too long)."""


def check_request(texts: Sequence[str], settings: EncoderSettings) -> None:
    """Raises ``InvalidBatch`` for a request over the service's limits."""
    limit, chars = settings.max_texts, settings.max_text_chars
    if len(texts) > limit:
        raise InvalidBatch(f"{len(texts)} texts in one request; the limit is {limit}")
    longest = max((len(t) for t in texts), default=0)
    if longest > chars:
        raise InvalidBatch(f"a text has {longest} characters; the limit is {chars}")


class EncoderRuntime:
    def __init__(self, settings: EncoderSettings):
        self.settings = settings
        self.text: TextEncoder | None = None
        self.warmup_error: str | None = None

    def start_warmup(self) -> threading.Thread:
        thread = threading.Thread(target=self.warm_up, name="kb-encoder-warmup", daemon=True)
        thread.start()
        return thread

    def warm_up(self) -> None:
        m = metrics()
        m.ready.set(0)
        started = time.perf_counter()
        try:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
            encoder = registry.text_encoder()  # loads and runs one real inference
            m.model_load.labels(encoder.version).set(encoder.load_seconds)
            m.warmup.labels("text_encoder").set(time.perf_counter() - started)
            self.text = encoder
            current = clip_models.promoted_now()
            if current is not None:  # no checkpoint promoted yet: nothing asks for CLIP
                clip_started = time.perf_counter()
                registry.clip_encoder(clip_models.export_dir(current.version))
                m.model_load.labels(current.version).set(time.perf_counter() - clip_started)
                m.warmup.labels("clip_encoder").set(time.perf_counter() - clip_started)
        except Exception as exc:
            self.warmup_error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up failed; the service stays not ready")
            return
        total = time.perf_counter() - started
        m.warmup.labels("total").set(total)
        m.ready.set(1)
        WARM.set()
        log.info("warm in %.1fs", total, extra={"warmup_s": round(total, 2)})

    def is_ready(self) -> bool:
        return WARM.is_set() and self.warmup_error is None

    def model(self) -> dict[str, object]:
        encoder = self._encoder()
        current = clip_models.promoted_now()
        return {
            "text_model": encoder.version,
            "dimensions": encoder.dimensions,
            "clip_model": current.version if current else None,
        }

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32, unit length: the texts of one batch (which adaptive
        batching may have joined from several requests)."""
        encoder = self._encoder()
        started = time.perf_counter()
        vectors = encoder.encode(list(texts))
        m = metrics()
        m.inference.labels(encoder.version).observe(time.perf_counter() - started)
        m.batch_texts.labels(encoder.version).observe(len(texts))
        m.texts.labels(encoder.version).inc(len(texts))
        return vectors

    def embed_clip(self, items: Sequence[ClipItem]) -> np.ndarray:
        """(len(items), 512) float32, unit length: CLIP vectors of texts and images, each with
        the checkpoint its item names (the front door checked that it can be served)."""
        m = metrics()
        started = time.perf_counter()
        vectors = clip_models.encode(items, self.settings.max_image_pixels)
        for version in {item.clip_version for item in items}:
            m.inference.labels(version).observe(time.perf_counter() - started)
        m.clip_batch_items.observe(len(items))
        for item in items:
            m.clip_items.labels(item.clip_version, item.kind).inc()
        return vectors

    def _encoder(self) -> TextEncoder:
        if self.text is None:
            raise RuntimeError("the encoder is not warm yet")
        return self.text

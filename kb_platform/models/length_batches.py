"""What the text encoders of each runtime share: encoding many texts in batches of similar
length (less padding), outputs in input order, and a warm-up with one real inference."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np


class LengthBatchedEncoder:
    """A text encoder over ``_encode_batch``; subclasses set ``batch_size`` and ``dimensions``."""

    batch_size: int
    dimensions: int

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimensions) float32, unit length; the output keeps the input order."""
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            ids = order[start : start + self.batch_size]
            out[ids] = self._encode_batch([texts[i] for i in ids])
        return out

    def warmup(self) -> float:
        """One real inference, so the first request does not pay for lazy initialisation."""
        started = time.perf_counter()
        self.encode(["warm up the text encoder"])
        return time.perf_counter() - started

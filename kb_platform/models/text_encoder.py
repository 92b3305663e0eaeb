"""all-MiniLM-L6-v2 with transformers: mean pooling over tokens, L2-normalized 384-d vectors."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

log = logging.getLogger(__name__)

MAX_TOKENS = 256  # the model's max_seq_length


class TextEncoder:
    """Encodes texts in batches; the same text always gives the same vector."""

    def __init__(self, model_dir: Path, *, batch_size: int = 32, version: str = "minilm-l6-v2"):
        started = time.perf_counter()
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.version = version
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.dimensions = int(self.model.config.hidden_size)
        self.load_seconds = time.perf_counter() - started
        log.info("text encoder %s loaded in %.2fs", version, self.load_seconds)

    @torch.inference_mode()
    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32, unit length. Texts are batched by length (less padding);
        the output keeps the input order."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            ids = order[start : start + self.batch_size]
            out[ids] = self._encode_batch([texts[i] for i in ids])
        return out

    def warmup(self) -> float:
        """One real inference, so the first request does not pay for lazy initialisation."""
        started = time.perf_counter()
        self.encode(["warm up the text encoder"])
        return time.perf_counter() - started

"""all-MiniLM-L6-v2 with transformers: mean pooling over tokens, L2-normalized 384-d vectors."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from kb_platform.models.length_batches import LengthBatchedEncoder
from kb_platform.models.registry import TEXT_MAX_TOKENS, TEXT_MODEL_VERSION

log = logging.getLogger(__name__)


class TextEncoder(LengthBatchedEncoder):
    """Encodes texts in batches; the same text always gives the same vector."""

    def __init__(self, model_dir: Path, *, batch_size: int = 32, version: str = TEXT_MODEL_VERSION):
        started = time.perf_counter()
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.version = version
        self.tokenizer = AutoTokenizer.from_pretrained(  # nosec B615 # local folder, no download
            str(model_dir), local_files_only=True
        )
        self.model = AutoModel.from_pretrained(  # nosec B615 # local folder, no download
            str(model_dir), local_files_only=True
        ).eval()
        self.dimensions = int(self.model.config.hidden_size)
        self.load_seconds = time.perf_counter() - started
        log.info("text encoder %s loaded in %.2fs", version, self.load_seconds)

    @torch.inference_mode()
    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=TEXT_MAX_TOKENS,
            return_tensors="pt",
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32)

"""all-MiniLM-L6-v2 on ONNX Runtime: the model's own tokenizer, the mean pooling and the L2
normalisation inside the exported graph (kb_platform.models.onnx_export), no torch at run time.

On CPU this is the cheap way to run MiniLM: ONNX Runtime's fused kernels skip PyTorch's per-op
dispatch, which is most of a short query's time (benchmarks/serving.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from kb_platform.models.length_batches import LengthBatchedEncoder
from kb_platform.models.registry import TEXT_MAX_TOKENS

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the exported graph's inputs


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The packaged MiniLM's tokenizer, truncating and padding as transformers' call does."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(TEXT_MAX_TOKENS)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    return tokenizer


class OnnxTextEncoder(LengthBatchedEncoder):
    """Encodes texts in batches; the same text always gives the same vector."""

    def __init__(
        self,
        graph: Path,
        tokenizer_dir: Path,
        *,
        version: str,
        batch_size: int = 32,
        threads: int = 1,
    ):
        started = time.perf_counter()
        self.version = version
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(tokenizer_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.dimensions = int(self.session.get_outputs()[0].shape[-1])
        self.load_seconds = time.perf_counter() - started
        log.info("text encoder %s (ONNX) loaded in %.2fs", version, self.load_seconds)

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = dict(zip(INPUTS, (ids, mask, np.zeros_like(ids)), strict=True))
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)

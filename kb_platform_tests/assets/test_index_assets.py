"""A document through to the index: embeddings in Parquet, chunks in Elasticsearch, checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from dagster import materialize

from kb_platform.config import get_settings
from kb_platform.defs.embeddings import image_embeddings, text_embeddings
from kb_platform.defs.search.delete_documents import delete_documents
from kb_platform.defs.search.index_version import (
    index_counts_match_stored,
    knn_recall_vs_exact,
    search_index_version,
)
from kb_platform.index.documents import vectors_of
from kb_platform.index.lifecycle import alias_targets
from kb_platform.index.mapping import IndexNames
from kb_platform.index.writer import chunk_ids_of
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.parquet_io import ParquetIOManager

pytestmark = pytest.mark.numerics

PDF = "documents/py-pdf-sample-files/026-latex-multicolumn/multicolumn.pdf"


def test_document_is_embedded_and_indexed_idempotently(
    materialize_file, corpus_dir: Path, es, index_base: str
) -> None:
    doc_id, first = materialize_file(corpus_dir / PDF, through_index=True)
    table: pa.Table = first.output_for_node("text_embeddings")
    vectors = vectors_of(table)
    assert vectors.shape == (table.num_rows, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    chunk_ids = set(table.column("chunk_id").to_pylist())
    read_alias = IndexNames(index_base).read_alias
    assert chunk_ids_of(es, read_alias, doc_id) == chunk_ids
    checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks["search_index_matches_stored_chunks"] is True

    # Materializing the same partition again changes nothing: upserts by chunk_id.
    _, second = materialize_file(corpus_dir / PDF, through_index=True)
    again = second.output_for_node("text_embeddings")
    np.testing.assert_allclose(vectors_of(again), vectors, rtol=0, atol=1e-6)  # same embeddings
    assert es.count(index=read_alias, query={"term": {"doc_id": doc_id}})["count"] == len(chunk_ids)


def test_new_version_rolls_out_from_stored_embeddings_with_checks(
    materialize_file, corpus_dir: Path, es, index_base: str, instance, workdir: Path
) -> None:
    doc_a, _ = materialize_file(corpus_dir / PDF, through_index=True)
    doc_b, _ = materialize_file(
        corpus_dir / "documents/unstructured/example-docs/book-war-and-peace-1p.txt",
        through_index=True,
    )
    names = IndexNames(index_base)
    resources = {
        "parquet_io_manager": ParquetIOManager(base_uri=str(workdir / "tables")),
        "elasticsearch": ElasticsearchResource(
            url=get_settings().elasticsearch_url, index_base=index_base
        ),
    }
    result = materialize(
        [
            text_embeddings.to_source_asset(),
            image_embeddings.to_source_asset(),
            search_index_version,
            index_counts_match_stored,
            knn_recall_vs_exact,
        ],
        instance=instance,
        resources=resources,
    )
    new_index = result.output_for_node("search_index_version")
    assert new_index == names.index(2)
    assert alias_targets(es, names.read_alias) == [new_index]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["index_counts_match_stored"].passed
    assert checks["knn_recall_vs_exact"].passed
    assert checks["knn_recall_vs_exact"].metadata["recall_at_10"].value >= 0.95

    deleted = delete_documents.execute_in_process(
        instance=instance,
        run_config={"ops": {"delete_document_chunks": {"config": {"doc_ids": [doc_b]}}}},
        resources={"elasticsearch": resources["elasticsearch"]},
    )
    assert deleted.success
    assert chunk_ids_of(es, f"{names.prefix}*", doc_b) == set()
    assert chunk_ids_of(es, names.read_alias, doc_a)
    assert doc_b not in instance.get_dynamic_partitions("documents")

"""An indexed slice of the shared corpus for the service tests: Cranfield abstracts chunked,
embedded with the packaged MiniLM and written to a fresh index family, as the assets do."""

from __future__ import annotations

from pathlib import Path

from elasticsearch import Elasticsearch

from kb_platform.evaluation.cranfield_chunks import cranfield_chunks
from kb_platform.index.analysis import embedding_input
from kb_platform.index.lifecycle import ensure_index
from kb_platform.index.mapping import IndexNames
from kb_platform.index.writer import bulk_with_retries, index_actions
from kb_platform.models.registry import text_encoder


def index_slice(es: Elasticsearch, names: IndexNames, folder: Path, limit: int) -> int:
    chunks = cranfield_chunks(folder, limit)
    vectors = text_encoder().encode([embedding_input(c["title"], c["text"]) for c in chunks])
    for chunk, vector in zip(chunks, vectors, strict=True):
        chunk["text_vector"] = vector.tolist()
    ensure_index(es, names)
    report = bulk_with_retries(es, index_actions(names.write_alias, chunks))
    if not report.ok:
        raise RuntimeError(f"indexing the slice failed: {report.failed[:3]}")
    es.indices.refresh(index=names.write_alias)
    return len(chunks)

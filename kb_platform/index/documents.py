"""Chunks with their vectors as an Arrow table (the stored embeddings) and as index documents."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from kb_platform.contracts import Chunk
from kb_platform.index.mapping import TEXT_DIMS

CHUNK_COLUMNS = [
    "chunk_id",
    "doc_id",
    "text",
    "title",
    "source_uri",
    "modality",
    "page",
    "char_start",
    "char_end",
    "start_s",
    "end_s",
]


def embeddings_table(chunks: Sequence[Chunk], vectors: np.ndarray, model: str) -> pa.Table:
    columns: dict[str, Any] = {name: [] for name in CHUNK_COLUMNS}
    for chunk in chunks:
        record = asdict(chunk)
        for name in CHUNK_COLUMNS:
            value = record[name]
            columns[name].append(value.value if hasattr(value, "value") else value)
    flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    columns["text_vector"] = pa.FixedSizeListArray.from_arrays(flat, TEXT_DIMS)
    columns["embedding_model"] = [model] * len(chunks)
    return pa.table(columns)


def vectors_of(table: pa.Table) -> np.ndarray:
    if table.num_rows == 0:
        return np.zeros((0, TEXT_DIMS), dtype=np.float32)
    return table.column("text_vector").combine_chunks().flatten().to_numpy().reshape(-1, TEXT_DIMS)


def index_documents(table: pa.Table) -> Iterator[dict[str, Any]]:
    """One Elasticsearch document per row; nulls left out (the mapping is strict)."""
    if table.num_rows == 0:
        return
    vectors = vectors_of(table)
    rows = table.drop_columns(["text_vector"]).to_pylist()
    for row, vector in zip(rows, vectors, strict=True):
        document = {k: v for k, v in row.items() if v is not None}
        document["kind"] = "text"
        document["text_vector"] = vector.tolist()
        yield document

"""CLIP vectors of a document as an Arrow table (the ``image_embeddings`` asset) and their place in
the index: every image of the document as a document of its own (``kind: image``), and a
``clip_vector`` on each of its text chunks (the CLIP text tower's view of the chunk)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from kb_platform.index.mapping import CLIP_DIMS

CLIP_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),  # a text chunk's id, or <doc_id>:image:<image_id>
        ("doc_id", pa.string()),
        ("kind", pa.string()),  # "text" | "image"
        ("text", pa.string()),  # images: caption or page text, shown and BM25-searchable
        ("title", pa.string()),
        ("source_uri", pa.string()),
        ("modality", pa.string()),
        ("page", pa.int32()),
        ("image_key", pa.string()),
        ("clip_vector", pa.list_(pa.float32(), CLIP_DIMS)),
        ("clip_model", pa.string()),
    ]
)


def clip_table(rows: Sequence[dict[str, Any]], vectors: np.ndarray, model: str) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in CLIP_SCHEMA.names}
    for row in rows:
        for name in CLIP_SCHEMA.names[:-2]:
            columns[name].append(row.get(name))
    flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    arrays = [pa.array(columns[name], type=CLIP_SCHEMA.field(name).type) for name in columns]
    arrays[-2] = pa.FixedSizeListArray.from_arrays(flat, CLIP_DIMS)
    arrays[-1] = pa.array([model] * len(rows), type=pa.string())
    return pa.Table.from_arrays(arrays, schema=CLIP_SCHEMA)


def empty_clip_table() -> pa.Table:
    return clip_table([], np.zeros((0, CLIP_DIMS), np.float32), "")


def clip_vectors_of(table: pa.Table) -> np.ndarray:
    if table.num_rows == 0:
        return np.zeros((0, CLIP_DIMS), dtype=np.float32)
    return table.column("clip_vector").combine_chunks().flatten().to_numpy().reshape(-1, CLIP_DIMS)


def with_clip(text_documents: Iterable[dict[str, Any]], clip: pa.Table | None) -> Iterator[dict]:
    """The text chunks with their CLIP vectors, then one document per image."""
    if clip is None or clip.num_rows == 0:
        yield from text_documents
        return
    vectors = clip_vectors_of(clip)
    rows = clip.drop_columns(["clip_vector"]).to_pylist()
    by_chunk = {
        row["chunk_id"]: (vector, row["clip_model"])
        for row, vector in zip(rows, vectors, strict=True)
        if row["kind"] == "text"
    }
    for document in text_documents:
        found = by_chunk.get(document["chunk_id"])
        if found is not None:
            document = {**document, "clip_vector": found[0].tolist(), "clip_model": found[1]}
        yield document
    for row, vector in zip(rows, vectors, strict=True):
        if row["kind"] == "image":
            image = {k: v for k, v in row.items() if v is not None}
            yield {**image, "clip_vector": vector.tolist()}


def image_chunk_ids(table: pa.Table) -> set[str]:
    if table.num_rows == 0:
        return set()
    kinds = table.column("kind").to_pylist()
    return {
        cid
        for cid, kind in zip(table.column("chunk_id").to_pylist(), kinds, strict=True)
        if kind == "image"
    }


def clip_models(table: pa.Table) -> set[str]:
    return set(table.column("clip_model").to_pylist()) if table.num_rows else set()

"""``image_embeddings``: CLIP vectors of each document's images and of its text chunks, made with
the promoted checkpoint, through the encoder service where one is configured (none promoted
yet: an empty table, and text search works alone)."""

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Output, asset

from kb_platform.contracts import Chunk, Document, Page, PageText
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.index.clip_documents import clip_table, empty_clip_table
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.clip_encoder import ClipEncoderResource

IMAGE_TEXT_CHARS = 300  # what an image document shows (and BM25 sees) of its caption or page


def image_rows(document: Document, pages: list[Page], texts: list[PageText]) -> list[dict]:
    final_text = {t.page_number: t.text for t in texts}  # the text layer, or what OCR read
    rows = []
    for page in pages:
        refs = ([page.render] if page.render is not None else []) + list(page.images)
        for ref in refs:
            rows.append(
                {
                    "chunk_id": f"{document.doc_id}:image:{ref.image_id}",
                    "doc_id": document.doc_id,
                    "kind": "image",
                    "text": " ".join(
                        (ref.caption or final_text.get(page.page_number) or page.text).split()
                    )[:IMAGE_TEXT_CHARS],
                    "title": document.title,
                    "source_uri": document.source_uri,
                    "modality": document.modality.value,
                    "page": page.page_number,
                    "image_key": ref.blob_key,
                }
            )
    return rows


@asset(
    partitions_def=documents_partitions,
    group_name="embeddings",
    kinds={"pytorch", "parquet"},
    io_manager_key="parquet_io_manager",
    deps=["promoted_clip_checkpoint"],
    description="512-d CLIP vectors (unit length) of every image of the document (page renders, "
    "figures, the picture itself) and of its text chunks, from the promoted checkpoint.",
)
def image_embeddings(
    context: AssetExecutionContext,
    raw_documents: Document,
    extracted_pages: list[Page],
    ocr_text: list[PageText],
    text_chunks: list[Chunk],
    clip: ClipResource,
    clip_encoder: ClipEncoderResource,
    blob_store: BlobStore,
) -> Output[pa.Table]:
    current = clip.promoted()
    if current is None:
        return Output(empty_clip_table(), metadata={"clip_version": "none", "images": 0})
    rows = image_rows(raw_documents, extracted_pages, ocr_text)
    image_vectors, text_vectors = clip_encoder.embed(
        current,
        [blob_store.get(row["image_key"]) for row in rows],
        [chunk.text for chunk in text_chunks],
    )
    text_rows = [{"chunk_id": c.chunk_id, "doc_id": c.doc_id, "kind": "text"} for c in text_chunks]
    table = clip_table(
        rows + text_rows, np.concatenate([image_vectors, text_vectors]), current.version
    )
    context.log.info("%d images and %d chunks embedded", len(rows), len(text_chunks))
    return Output(
        table,
        metadata={
            "clip_version": current.version,
            "images": len(rows),
            "text_chunks": len(text_chunks),
        },
    )

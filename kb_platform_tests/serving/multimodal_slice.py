"""A small multimodal index for the /ask tests, built as the assets build it: Cranfield abstracts,
a born-digital PDF from the corpus (its text, page render and embedded figure extracted and put
in a blob store), Tesseract's test page as an image document, and one large image (a noise
picture, for the response-size limit). Text chunks get MiniLM vectors; chunks and images get
CLIP vectors from the served checkpoint."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch
from PIL import Image

from kb_platform.chunking import split_windows
from kb_platform.contracts import Document, Modality, PageText
from kb_platform.defs.embeddings.image_embeddings import image_rows
from kb_platform.extraction import extract
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.stored import store_pages
from kb_platform.index.analysis import embedding_input
from kb_platform.index.lifecycle import ensure_index
from kb_platform.index.mapping import IndexNames
from kb_platform.index.writer import bulk_with_retries, index_actions
from kb_platform.models.registry import clip_encoder, text_encoder, text_tokenizer
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform_tests.serving.corpus_slice import cranfield_chunks

PDF = Path("documents/py-pdf-sample-files/003-pdflatex-image/pdflatex-image.pdf")
PHOTOTEST = Path("ocr/tesseract/phototest.tif")
PHOTOTEST_TEXT = Path("ocr/tesseract/phototest.txt")
PDF_DOC, PHOTO_DOC, NOISE_DOC = "pdf-lorem", "photo-test", "noise"


@dataclass(frozen=True)
class Slice:
    chunks: int
    images: dict[str, str]  # chunk id -> image key, every image indexed


def _document(doc_id: str, modality: Modality, mime: str, content: bytes, title: str) -> Document:
    return Document(
        doc_id=doc_id,
        source_id=doc_id,
        source_uri=f"file:///corpus/{doc_id}",
        modality=modality,
        content_type=mime,
        declared_content_type=mime,
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        blob_key=f"raw/{doc_id}",
        metadata={"title": title},
    )


def _noise_png(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _pages(store: LocalBlobStore, corpus: Path) -> tuple[list[dict], list[dict]]:
    """(text chunks, image rows) of the PDF, the test page and the noise picture."""
    tokenizer = text_tokenizer()
    chunks: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    sources = [
        (PDF_DOC, Modality.DOCUMENT, "application/pdf", (corpus / PDF).read_bytes(), "Lorem"),
        (PHOTO_DOC, Modality.IMAGE, "image/tiff", (corpus / PHOTOTEST).read_bytes(), "Test"),
        (NOISE_DOC, Modality.IMAGE, "image/png", _noise_png(1200, 1000), "Noise"),
    ]
    ocr = (corpus / PHOTOTEST_TEXT).read_text()  # what Tesseract reads there (its ground truth)
    for doc_id, modality, mime, content, title in sources:
        document = _document(doc_id, modality, mime, content, title)
        pages = store_pages(store, doc_id, extract(content, mime, limits=Limits()))
        texts = [
            PageText(doc_id, p.page_number, ocr if doc_id == PHOTO_DOC else p.text, "text_layer")
            for p in pages
        ]
        images += image_rows(document, pages, texts)
        for text in texts:
            for n, window in enumerate(split_windows(text.text, tokenizer)):
                chunks.append(
                    {
                        "chunk_id": f"{doc_id}:{text.page_number}:{n}",
                        "doc_id": doc_id,
                        "modality": modality.value,
                        "kind": "text",
                        "text": text.text[window.char_start : window.char_end],
                        "title": title,
                        "source_uri": document.source_uri,
                        "page": text.page_number,
                        "char_start": window.char_start,
                        "char_end": window.char_end,
                    }
                )
    return chunks, images


def index_multimodal_slice(
    es: Elasticsearch,
    names: IndexNames,
    corpus: Path,
    store: LocalBlobStore,
    clip_export: Path,
    cranfield_docs: int = 40,
) -> Slice:
    extra_chunks, image_docs = _pages(store, corpus)
    chunks = cranfield_chunks(corpus / "retrieval" / "cranfield", cranfield_docs) + extra_chunks
    vectors = text_encoder().encode([embedding_input(c["title"], c["text"]) for c in chunks])
    clip = clip_encoder(clip_export)
    text_clip = clip.encode_texts([c["text"] for c in chunks])
    pictures = [Image.open(io.BytesIO(store.get(row["image_key"]))) for row in image_docs]
    image_clip = clip.encode_images([p.convert("RGB") for p in pictures])
    for chunk, vector, clip_vector in zip(chunks, vectors, text_clip, strict=True):
        chunk["text_vector"] = vector.tolist()
        chunk["clip_vector"] = clip_vector.tolist()
    for row, clip_vector in zip(image_docs, image_clip, strict=True):
        row["clip_vector"] = clip_vector.tolist()
    ensure_index(es, names)
    report = bulk_with_retries(es, index_actions(names.write_alias, chunks + image_docs))
    if not report.ok:
        raise RuntimeError(f"indexing the slice failed: {report.failed[:3]}")
    es.indices.refresh(index=names.write_alias)
    return Slice(len(chunks), {row["chunk_id"]: row["image_key"] for row in image_docs})

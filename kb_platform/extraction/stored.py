"""Extracted pages as records: renders and embedded images put in the blob store, the pages
pointing at them. Used by the ``extracted_pages`` asset and by the CLIP corpus builders."""

from __future__ import annotations

from collections.abc import Sequence

from kb_platform.contracts import ImageRef, Page, TextSpan
from kb_platform.extraction.model import ExtractedImage, ExtractedPage
from kb_platform.resources.blob_store import BlobStore


def store_image(
    store: BlobStore, doc_id: str, image_id: str, image: ExtractedImage, kind: str
) -> ImageRef:
    key = f"images/{doc_id}/{image_id}.png"
    store.put(key, image.png)
    return ImageRef(image_id, key, image.width, image.height, kind, image.caption)


def store_pages(store: BlobStore, doc_id: str, extracted: Sequence[ExtractedPage]) -> list[Page]:
    pages = []
    for page in extracted:
        prefix = f"page-{page.page_number:04d}"
        render = None
        if page.render is not None:
            render = store_image(store, doc_id, prefix, page.render, "page")
        images = tuple(
            store_image(store, doc_id, f"{prefix}-img-{i:02d}", image, "embedded")
            for i, image in enumerate(page.images)
        )
        pages.append(
            Page(
                doc_id=doc_id,
                page_number=page.page_number,
                text=page.text,
                spans=tuple(TextSpan(a, b, bbox) for a, b, bbox in page.spans),
                render=render,
                images=images,
                needs_ocr=page.needs_ocr,
            )
        )
    return pages

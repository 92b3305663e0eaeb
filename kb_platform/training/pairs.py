"""Image-text training pairs from the knowledge base itself: page renders with their text, figures
with their captions (or their page's text), images with their OCR text. Held-out pairs are
chosen by document, never by chunk or page, so no document is on both sides of the split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from kb_platform.contracts import Page, PageText

MAX_TEXT_CHARS = 600  # well past what the text tower reads (64 tokens); keeps the table small
MIN_TEXT_CHARS = 20  # a pair needs text that says something about its image
HELD_OUT_PERCENT = 20


@dataclass(frozen=True)
class Pair:
    doc_id: str
    image_key: str  # blob store key of the image
    text: str
    kind: str  # "page" | "embedded" | "original"
    page: int


def _clean(text: str) -> str:
    return " ".join(text.split())[:MAX_TEXT_CHARS]


def document_pairs(pages: Sequence[Page], page_texts: Sequence[PageText]) -> list[Pair]:
    """Every image of a document with the text that describes it best."""
    final_text = {p.page_number: _clean(p.text) for p in page_texts}
    pairs = []
    for page in pages:
        text = final_text.get(page.page_number) or _clean(page.text)
        if page.render is not None and len(text) >= MIN_TEXT_CHARS:
            pairs.append(
                Pair(page.doc_id, page.render.blob_key, text, page.render.kind, page.page_number)
            )
        for image in page.images:
            described = _clean(image.caption or "") or text
            if len(described) >= MIN_TEXT_CHARS:
                pairs.append(
                    Pair(page.doc_id, image.blob_key, described, image.kind, page.page_number)
                )
    return pairs


def is_held_out(doc_id: str, percent: int = HELD_OUT_PERCENT) -> bool:
    """A stable, document-level split: the same document is always on the same side."""
    return int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 100 < percent


def pairs_table(pairs: Iterable[Pair]) -> pa.Table:
    rows = [asdict(p) for p in pairs]
    schema = pa.schema(
        [
            ("doc_id", pa.string()),
            ("image_key", pa.string()),
            ("text", pa.string()),
            ("kind", pa.string()),
            ("page", pa.int32()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def pairs_of(table: pa.Table) -> list[Pair]:
    return [Pair(**row) for row in table.to_pylist()]

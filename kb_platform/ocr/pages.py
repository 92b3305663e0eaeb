"""OCR of the pages that need it, side by side (one Tesseract thread each), under a deadline."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from kb_platform.contracts import Page, PageText
from kb_platform.errors import Timeout
from kb_platform.ocr.tesseract import recognize

log = logging.getLogger(__name__)


def page_texts(
    pages: Sequence[Page],
    load_image: Callable[[str], bytes],
    *,
    languages: str,
    page_timeout_s: float,
    total_timeout_s: float,
    workers: int | None = None,
) -> tuple[list[PageText], list[int]]:
    """Each page's final text: its text layer, or OCR of its render when it needs OCR.

    Returns the texts and the page numbers whose OCR failed on a per-page timeout (their
    text is empty and they are reported, never dropped). Raises ``Timeout`` when the whole
    document runs past ``total_timeout_s``.
    """
    deadline = time.monotonic() + total_timeout_s
    failed: list[int] = []

    def one(page: Page) -> PageText:
        if not page.needs_ocr or page.render is None:
            return PageText(page.doc_id, page.page_number, page.text, "text_layer")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(f"OCR of the document exceeded {total_timeout_s:g}s", doc_id=page.doc_id)
        image = Image.open(io.BytesIO(load_image(page.render.blob_key)))
        try:
            result = recognize(image, languages=languages, timeout_s=min(page_timeout_s, remaining))
        except Timeout:
            if time.monotonic() >= deadline:
                raise Timeout(
                    f"OCR of the document exceeded {total_timeout_s:g}s", doc_id=page.doc_id
                ) from None
            log.warning("OCR of page %d of %s timed out", page.page_number, page.doc_id)
            failed.append(page.page_number)
            return PageText(page.doc_id, page.page_number, page.text, "ocr_timeout")
        return PageText(
            doc_id=page.doc_id,
            page_number=page.page_number,
            text=result.text,
            method="ocr",
            ocr_confidence=result.mean_confidence,
            ocr_rotation=result.rotation,
            word_confidences=tuple(w.confidence for w in result.words),
        )

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        texts = list(pool.map(one, pages))
    return texts, sorted(failed)

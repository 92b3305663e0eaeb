"""PDFs with pypdfium2: text layer with positions, page renders, embedded images."""

from __future__ import annotations

import logging

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from kb_platform.errors import Corrupt, Encrypted, TooLarge
from kb_platform.extraction.images import png_bytes, to_rgb
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.model import ExtractedImage, ExtractedPage, text_layer_is_usable

log = logging.getLogger(__name__)


def _open(content: bytes, password: str | None) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(content, password=password)
    except pdfium.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            if password:
                raise Encrypted("the PDF password given is wrong") from exc
            raise Encrypted("the PDF is encrypted; send its password as metadata.password") from exc
        raise Corrupt(f"PDF cannot be opened: {message}") from exc


def _text_with_spans(page: pdfium.PdfPage) -> tuple[str, list[tuple[int, int, tuple]]]:
    textpage = page.get_textpage()
    try:
        parts: list[str] = []
        spans: list[tuple[int, int, tuple]] = []
        offset = 0
        for index in range(textpage.count_rects()):
            left, bottom, right, top = textpage.get_rect(index)
            segment = textpage.get_text_bounded(left, bottom, right, top).strip()
            if not segment:
                continue
            spans.append((offset, offset + len(segment), (left, bottom, right, top)))
            parts.append(segment)
            offset += len(segment) + 1
        return "\n".join(parts), spans
    finally:
        textpage.close()


def _embedded_images(page: pdfium.PdfPage, limits: Limits) -> list[ExtractedImage]:
    images: list[ExtractedImage] = []
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4):
        if len(images) >= limits.max_embedded_images_per_page:
            break
        try:
            width, height = obj.get_px_size()
            if min(width, height) < limits.min_embedded_image_side:
                continue
            if width * height > limits.max_pixels:
                continue
            image = obj.get_bitmap(render=False).to_pil()
        except (pdfium.PdfiumError, ValueError, OSError) as exc:
            log.debug("embedded image skipped (cannot be decoded): %s", exc)
            continue
        images.append(ExtractedImage(png=png_bytes(image), width=width, height=height))
    return images


def _render(page: pdfium.PdfPage, dpi: int, limits: Limits) -> ExtractedImage:
    width_pt, height_pt = page.get_size()
    scale = dpi / 72
    # Huge page boxes (a poster, a hostile MediaBox) are scaled down to stay under the pixel cap.
    pixels = width_pt * height_pt * scale * scale
    if pixels > limits.max_pixels:
        scale *= (limits.max_pixels / pixels) ** 0.5
    image = to_rgb(page.render(scale=scale).to_pil())
    return ExtractedImage(png=png_bytes(image), width=image.width, height=image.height)


def extract_pdf(content: bytes, *, password: str | None, limits: Limits) -> list[ExtractedPage]:
    document = _open(content, password)
    try:
        count = len(document)
        if count > limits.max_pages:
            raise TooLarge(f"{count} pages is over the limit of {limits.max_pages}")
        if count == 0:
            raise Corrupt("the PDF has no pages")
        pages: list[ExtractedPage] = []
        for index in range(count):
            try:
                page = document[index]
            except pdfium.PdfiumError as exc:
                raise Corrupt(f"page {index + 1} cannot be loaded: {exc}") from exc
            try:
                text, spans = _text_with_spans(page)
                needs_ocr = not text_layer_is_usable(text)
                render = _render(page, limits.ocr_dpi if needs_ocr else limits.render_dpi, limits)
                pages.append(
                    ExtractedPage(
                        page_number=index + 1,
                        text=text,
                        spans=spans,
                        render=render,
                        images=_embedded_images(page, limits),
                        needs_ocr=needs_ocr,
                    )
                )
            finally:
                page.close()
        return pages
    finally:
        document.close()

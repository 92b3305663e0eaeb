"""Turning stored bytes into pages of text and images, by the type sniffed from the content."""

from __future__ import annotations

from collections.abc import Callable

from kb_platform.errors import Corrupt, Encrypted, KbError, UnsupportedType
from kb_platform.extraction import markup, office
from kb_platform.extraction.images import frames, open_image, png_bytes
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.model import ExtractedImage, ExtractedPage
from kb_platform.extraction.pdf import extract_pdf

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

_BY_MIME: dict[str, Callable[[bytes, Limits], list[ExtractedPage]]] = {
    DOCX: office.extract_docx,
    PPTX: office.extract_pptx,
    XLSX: office.extract_xlsx,
    "application/vnd.oasis.opendocument.text": office.extract_odt,
    "text/html": lambda content, _: markup.extract_html(content),
    "application/xhtml+xml": lambda content, _: markup.extract_html(content),
    "text/xml": lambda content, _: markup.extract_html(content),
    "application/xml": lambda content, _: markup.extract_html(content),
    "application/epub+zip": lambda content, _: markup.extract_epub(content),
    "text/rtf": lambda content, _: markup.extract_rtf(content),
    "application/rtf": lambda content, _: markup.extract_rtf(content),
}
# Text-like types read as plain text: Markdown, CSV/TSV, TeX, JSON, source code ...
_PLAIN_PREFIXES = ("text/",)
_PLAIN_TYPES = {"application/json", "application/x-ndjson", "application/csv"}
AUDIO_PREFIX = "audio/"


def is_supported(mime: str) -> bool:
    return (
        mime in ("application/pdf", "application/encrypted")  # the latter fails as Encrypted
        or mime.startswith(("image/", AUDIO_PREFIX, *_PLAIN_PREFIXES))
        or mime in _BY_MIME
        or mime in _PLAIN_TYPES
    )


def extract_image(content: bytes, limits: Limits) -> list[ExtractedPage]:
    image = open_image(content, max_pixels=limits.max_pixels)
    pages = []
    for number, frame in enumerate(frames(image, limits.max_pages), start=1):
        render = ExtractedImage(png=png_bytes(frame), width=frame.width, height=frame.height)
        pages.append(ExtractedPage(page_number=number, text="", render=render, needs_ocr=True))
    return pages


def extract(
    content: bytes, mime: str, *, limits: Limits, password: str | None = None
) -> list[ExtractedPage]:
    """Pages of a document of the given (sniffed) type; typed errors for anything unusable."""
    try:
        return _extract(content, mime, limits=limits, password=password)
    except KbError:
        raise
    except Exception as exc:  # a parser library choking on a malformed file
        raise Corrupt(f"{mime} content cannot be parsed: {type(exc).__name__}: {exc}") from exc


def _extract(
    content: bytes, mime: str, *, limits: Limits, password: str | None
) -> list[ExtractedPage]:
    if mime == "application/encrypted":
        raise Encrypted("the office document is password-protected")
    if mime == "application/pdf":
        return extract_pdf(content, password=password, limits=limits)
    if mime.startswith("image/"):
        return extract_image(content, limits)
    if mime in _BY_MIME:
        return _BY_MIME[mime](content, limits)
    if mime.startswith(_PLAIN_PREFIXES) or mime in _PLAIN_TYPES:
        return markup.extract_plain(content)
    raise UnsupportedType(f"no extractor for content of type {mime}")

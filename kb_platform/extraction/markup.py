"""Markup formats: HTML/XHTML/XML (BeautifulSoup + lxml), EPUB (ebooklib), RTF (striprtf)."""

from __future__ import annotations

import re
import warnings

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

from kb_platform.extraction.model import ExtractedPage
from kb_platform.extraction.text import decode_text

_BLANK_LINES = re.compile(r"\n\s*\n+")
_NON_CONTENT = ["script", "style", "noscript", "template", "head", "svg"]


def html_to_text(markup: str | bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    for tag in soup(_NON_CONTENT):
        tag.decompose()
    text = soup.get_text("\n")
    lines = (line.strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def extract_html(content: bytes) -> list[ExtractedPage]:
    # Let BeautifulSoup honour a <meta charset>; it falls back to detection itself.
    return [ExtractedPage(page_number=1, text=html_to_text(content))]


def extract_epub(content: bytes) -> list[ExtractedPage]:
    import tempfile

    import ebooklib
    from ebooklib import epub

    # ebooklib reads from a path or file object.
    with tempfile.NamedTemporaryFile(suffix=".epub") as handle:
        handle.write(content)
        handle.flush()
        book = epub.read_epub(handle.name, options={"ignore_ncx": True})
    pages = []
    for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT):
        text = html_to_text(item.get_content())
        if text:
            pages.append(ExtractedPage(page_number=len(pages) + 1, text=text))
    return pages or [ExtractedPage(page_number=1, text="")]


def extract_rtf(content: bytes) -> list[ExtractedPage]:
    from striprtf.striprtf import rtf_to_text

    return [ExtractedPage(page_number=1, text=rtf_to_text(decode_text(content)).strip())]


def extract_plain(content: bytes) -> list[ExtractedPage]:
    return [ExtractedPage(page_number=1, text=decode_text(content))]

"""The real type of some bytes, from their content (libmagic), never from a name or a claim."""

from __future__ import annotations

import magic
from charset_normalizer import from_bytes

# Types libmagic reports for text that is not plain ASCII/UTF-8 (e.g. UTF-16 without a BOM).
_OPAQUE = {"application/octet-stream", "application/x-empty"}
SNIFF_BYTES = 1024 * 1024


def sniff_mime(content: bytes) -> str:
    mime = magic.from_buffer(content[:SNIFF_BYTES], mime=True)
    if mime in _OPAQUE and content and looks_like_text(content):
        return "text/plain"
    return mime


def looks_like_text(content: bytes) -> bool:
    best = from_bytes(content[:SNIFF_BYTES]).best()
    return best is not None and best.chaos < 0.2

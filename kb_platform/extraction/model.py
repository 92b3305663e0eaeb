"""What the extractors return: pages with their images still in memory (PNG bytes).

The asset turns these into ``contracts.Page`` records once the images are in the blob store.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

# A text layer with fewer useful characters than this is treated as missing (scans often carry
# a few stray glyphs or only a page number).
MIN_TEXT_LAYER_CHARS = 32
# Above this share of unusable characters (replacement, private-use, control) the layer is
# garbage: fonts without a Unicode map extract as noise.
MAX_GARBAGE_SHARE = 0.3


@dataclass(frozen=True)
class ExtractedImage:
    png: bytes
    width: int
    height: int
    caption: str | None = None


@dataclass(frozen=True)
class ExtractedPage:
    page_number: int
    text: str
    spans: list[tuple[int, int, tuple]] = field(default_factory=list)
    render: ExtractedImage | None = None
    images: list[ExtractedImage] = field(default_factory=list)
    needs_ocr: bool = False


def _is_garbage(char: str) -> bool:
    return char == "\ufffd" or unicodedata.category(char) in ("Co", "Cc", "Cs", "Cn")


def text_layer_is_usable(text: str) -> bool:
    visible = [c for c in text if not c.isspace()]
    if len(visible) < MIN_TEXT_LAYER_CHARS:
        return False
    garbage = sum(1 for c in visible if _is_garbage(c))
    return garbage / len(visible) <= MAX_GARBAGE_SHARE

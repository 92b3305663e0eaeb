"""Token-aware chunking with overlap; every chunk keeps the offsets it was cut from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from kb_platform.contracts import Chunk, Document, PageText, TranscriptSegment

# all-MiniLM-L6-v2 reads at most 256 word pieces; leave room for [CLS]/[SEP].
DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 40
# A text only this much longer than one window stays one chunk rather than leaving a small
# tail chunk that repeats the overlap and says little; chunks never exceed MAX_CHUNK_TOKENS.
TAIL_SLACK = 40
MAX_CHUNK_TOKENS = DEFAULT_MAX_TOKENS + TAIL_SLACK
# How far back from a window's hard end to look for a sentence or line boundary.
BOUNDARY_SEARCH_SHARE = 0.25
_BOUNDARY = re.compile(r"[.!?;:]['\")\]]?$")


@dataclass(frozen=True)
class TextWindow:
    char_start: int
    char_end: int
    token_count: int


def _is_boundary(text: str, token_end: int) -> bool:
    before = text[max(0, token_end - 2) : token_end]
    after = text[token_end : token_end + 1]
    return bool(_BOUNDARY.search(before)) or after == "\n"


def split_windows(
    text: str,
    tokenizer: Tokenizer,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    tail_slack: int = TAIL_SLACK,
) -> list[TextWindow]:
    """Windows of about ``max_tokens`` tokens that overlap by about ``overlap`` tokens, ending at
    a sentence or line boundary when one is near the hard end; the last window may take up to
    ``tail_slack`` more tokens instead of leaving a small tail."""
    if not 0 <= overlap < max_tokens:
        raise ValueError("overlap must be at least 0 and smaller than max_tokens")
    offsets: Sequence[tuple[int, int]] = tokenizer.encode(text, add_special_tokens=False).offsets
    if not offsets:
        return []
    windows: list[TextWindow] = []
    start = 0
    while start < len(offsets):
        fits_with_tail = len(offsets) - start <= max_tokens + tail_slack
        hard_end = len(offsets) if fits_with_tail else start + max_tokens
        end = hard_end
        if hard_end < len(offsets):
            floor = max(start + 1, hard_end - int(max_tokens * BOUNDARY_SEARCH_SHARE))
            for candidate in range(hard_end, floor - 1, -1):
                if _is_boundary(text, offsets[candidate - 1][1]):
                    end = candidate
                    break
        windows.append(
            TextWindow(
                char_start=offsets[start][0],
                char_end=offsets[end - 1][1],
                token_count=end - start,
            )
        )
        if end >= len(offsets):
            break
        start = max(end - overlap, start + 1)
    return windows


def chunk_pages(
    document: Document,
    pages: Sequence[PageText],
    tokenizer: Tokenizer,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """Chunks of each page's text; offsets are into that page's ``PageText.text``."""
    chunks: list[Chunk] = []
    for page in pages:
        for window in split_windows(page.text, tokenizer, max_tokens=max_tokens, overlap=overlap):
            chunks.append(
                Chunk(
                    chunk_id=f"{document.doc_id}-p{page.page_number:04d}-{len(chunks):05d}",
                    doc_id=document.doc_id,
                    text=page.text[window.char_start : window.char_end],
                    token_count=window.token_count,
                    source_uri=document.source_uri,
                    title=document.title,
                    modality=document.modality,
                    page=page.page_number,
                    char_start=window.char_start,
                    char_end=window.char_end,
                )
            )
    return chunks


def chunk_transcript(
    document: Document,
    segments: Sequence[TranscriptSegment],
    tokenizer: Tokenizer,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """Chunks of a transcript; each keeps the audio time span of the segments it covers."""
    parts, spans, offset = [], [], 0
    for segment in segments:
        text = segment.text.strip()
        if not text:
            continue
        parts.append(text)
        spans.append((offset, offset + len(text), segment))
        offset += len(text) + 1
    full_text = " ".join(parts)
    chunks: list[Chunk] = []
    for window in split_windows(full_text, tokenizer, max_tokens=max_tokens, overlap=overlap):
        covered = [s for a, b, s in spans if a < window.char_end and b > window.char_start]
        chunks.append(
            Chunk(
                chunk_id=f"{document.doc_id}-t{len(chunks):05d}",
                doc_id=document.doc_id,
                text=full_text[window.char_start : window.char_end],
                token_count=window.token_count,
                source_uri=document.source_uri,
                title=document.title,
                modality=document.modality,
                start_s=covered[0].start_s,
                end_s=covered[-1].end_s,
            )
        )
    return chunks

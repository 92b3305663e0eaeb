"""An answer as typed parts for clients that show mixed content: runs of text with the source
numbers they cite, and each cited image placed right after the first text that cites it."""

from __future__ import annotations

import re

from kb_platform.serving.prompt import cited_numbers
from kb_platform.serving.schemas import AnswerPart, Citation, ImagePart, TextPart

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_MAX_NUMBER = 99


def _text(sentences: list[str]) -> TextPart:
    text = " ".join(sentences)
    return TextPart(text=text, citations=cited_numbers(text, _MAX_NUMBER))


def _image(citation: Citation) -> ImagePart:
    assert citation.image_key and citation.image_url
    return ImagePart(
        number=citation.number,
        doc_id=citation.doc_id,
        page=citation.page,
        image_key=citation.image_key,
        url=citation.image_url,
        caption=citation.snippet or None,
        score=citation.score,
    )


def answer_parts(text: str, citations: list[Citation]) -> list[AnswerPart]:
    """``text`` split at sentence ends into text parts, an image part after the sentence that
    first cites each image among ``citations`` (the answer's cited sources)."""
    images = {c.number: c for c in citations if c.kind == "image" and c.image_url}
    parts: list[AnswerPart] = []
    pending: list[str] = []
    shown: set[int] = set()
    for sentence in _SENTENCE_END.split(text.strip()):
        pending.append(sentence)
        new = [n for n in cited_numbers(sentence, _MAX_NUMBER) if n in images and n not in shown]
        if new:
            parts.append(_text(pending))
            pending = []
            for number in new:
                parts.append(_image(images[number]))
                shown.add(number)
    if pending and any(s.strip() for s in pending):
        parts.append(_text(pending))
    return parts

"""Grounded prompts with numbered sources, and the citations read back from an answer.

The local generator is a small base (not instruction-tuned) model: it is given the numbered
sources and the question as a completion whose answer already starts with "According to [", so
it continues with a source number and the sentence it supports. Chat models (an OpenAI-compatible
endpoint) get the same sources as messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb_platform.index.retriever import Hit

STOP = ("\nQuestion:", "\n\n", "\n[", "<end_of_turn>", "<eos>")
ANSWER_PREFIX = "According to ["
INSTRUCTIONS = (
    "Answer the question using only the numbered sources. After each statement, cite the "
    "source it comes from by its number in brackets, like [1]. If the sources do not contain "
    "the answer, say so."
)
_CITATION = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Source:
    number: int
    hit: Hit

    @property
    def text(self) -> str:
        return str(self.hit.source.get("text") or "")

    @property
    def title(self) -> str:
        return str(self.hit.source.get("title") or "")

    @property
    def page(self) -> int | None:
        page = self.hit.source.get("page")
        return int(page) if page is not None else None


@dataclass(frozen=True)
class Prompt:
    completion: str  # for a completion model: ends with ANSWER_PREFIX
    system: str
    user: str  # for a chat model: sources and question
    prefix: str  # the start of the answer that the completion already contains
    # What a completion model's continuation may begin with: a given source's number and "]"
    # (the prefix ends with "["), so its first citation is valid by construction.
    starts: tuple[str, ...] = ()


def number_sources(hits: list[Hit]) -> list[Source]:
    return [Source(n, hit) for n, hit in enumerate(hits, start=1)]


def clip_text(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, cut at a word boundary."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return (cut[: cut.rfind(" ")] if " " in cut else cut) + " ..."


def _source_block(sources: list[Source], max_chars: int) -> str:
    lines = []
    for source in sources:
        where = source.title
        if source.page is not None:
            where = f"{where}, page {source.page}" if where else f"page {source.page}"
        head = f"[{source.number}] ({where}) " if where else f"[{source.number}] "
        lines.append(head + clip_text(source.text, max_chars))
    return "\n".join(lines)


def build_prompt(question: str, sources: list[Source], *, max_source_chars: int) -> Prompt:
    question = _SPACE.sub(" ", question).strip()
    block = _source_block(sources, max_source_chars)
    user = f"Sources:\n{block}\n\nQuestion: {question}"
    completion = f"{INSTRUCTIONS}\n\n{user}\nAnswer: {ANSWER_PREFIX}"
    return Prompt(
        completion=completion,
        system=INSTRUCTIONS,
        user=user,
        prefix=ANSWER_PREFIX,
        starts=tuple(f"{source.number}]" for source in sources),
    )


def cited_numbers(answer: str, count: int) -> list[int]:
    """The source numbers an answer cites, in order of first citation; numbers outside
    1..count (sources that were never given) are ignored."""
    found: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= count and number not in found:
                found.append(number)
    return found

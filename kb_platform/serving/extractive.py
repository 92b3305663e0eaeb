"""The extractive answer: the source sentences that share the most terms with the question,
each followed by its source number. Used when generation times out or cites nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb_platform.index.analysis import analyze
from kb_platform.serving.prompt import Source

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Za-z0-9(\"'])")
MAX_SENTENCE_CHARS = 400


@dataclass(frozen=True)
class Extract:
    answer: str
    numbers: list[int]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def _terms(text: str) -> set[str]:
    return set(analyze(text).split())


def best_sentences(question: str, sources: list[Source], limit: int = 2) -> list[tuple[int, str]]:
    """(source number, sentence) pairs, best first: most question terms matched, then the
    better-ranked source, then the earlier sentence."""
    wanted = _terms(question)
    scored: list[tuple[float, int, int, str]] = []
    for source in sources:
        for position, sentence in enumerate(sentences(source.text)):
            overlap = len(wanted & _terms(sentence))
            if overlap:
                scored.append((-overlap, source.number, position, sentence))
    scored.sort()
    return [(number, sentence[:MAX_SENTENCE_CHARS]) for _, number, _, sentence in scored[:limit]]


def extractive_answer(question: str, sources: list[Source], limit: int = 2) -> Extract:
    picked = best_sentences(question, sources, limit)
    if not picked and sources:  # no shared term: quote the top source's opening
        first = sentences(sources[0].text)
        picked = [(sources[0].number, first[0][:MAX_SENTENCE_CHARS])] if first else []
    if not picked:
        return Extract("The indexed sources do not contain an answer to this question.", [])
    answer = " ".join(f"{sentence} [{number}]" for number, sentence in picked)
    numbers: list[int] = []
    for number, _ in picked:
        if number not in numbers:
            numbers.append(number)
    return Extract(answer, numbers)


def snippet(question: str, source: Source, max_chars: int = 300) -> str:
    """The part of a cited chunk that best matches the question."""
    best = best_sentences(question, [source], limit=1)
    text = best[0][1] if best else " ".join(source.text.split())
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " ..."

"""/ask: numbered sources, a grounded prompt, a generated answer that cites them, and the
extractive fallback (same numbered sources) when generation times out or cites nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kb_platform.index.retriever import Hit
from kb_platform.serving.extractive import extractive_answer, snippet
from kb_platform.serving.generation import Generator
from kb_platform.serving.prompt import Source, build_prompt, cited_numbers, number_sources
from kb_platform.serving.schemas import Citation


@dataclass(frozen=True)
class Answer:
    text: str
    citations: list[Citation]
    sources: list[Citation]
    extractive: bool
    fallback_reason: str | None
    finish_reason: str
    tokens: int
    generation_s: float


def citations_for(question: str, sources: list[Source]) -> list[Citation]:
    """One citation per numbered source, in number order (number n at index n - 1)."""
    return [
        Citation(
            number=source.number,
            chunk_id=source.hit.chunk_id,
            doc_id=source.hit.doc_id,
            page=source.page,
            title=source.title or None,
            source_uri=source.hit.source.get("source_uri"),
            snippet=snippet(question, source),
            score=source.hit.score,
        )
        for source in sources
    ]


def _cited(given: list[Citation], numbers: list[int]) -> list[Citation]:
    return [given[n - 1] for n in numbers]


def _fallback(
    question: str, sources: list[Source], reason: str, finish: str, tokens: int, seconds: float
) -> Answer:
    extract = extractive_answer(question, sources)
    given = citations_for(question, sources)
    return Answer(
        extract.answer,
        _cited(given, extract.numbers),
        given,
        True,
        reason,
        finish,
        tokens,
        seconds,
    )


def answer_question(
    question: str,
    hits: list[Hit],
    generator: Generator,
    *,
    max_new_tokens: int,
    deadline: float,
    max_source_chars: int,
) -> Answer:
    sources = number_sources(hits)
    if not sources:
        return Answer(
            "No indexed source matches the question, so it cannot be answered from the "
            "knowledge base.",
            [],
            [],
            True,
            "no sources retrieved",
            "stop",
            0,
            0.0,
        )
    prompt = build_prompt(question, sources, max_source_chars=max_source_chars)
    started = time.perf_counter()
    generation = generator.generate(prompt, max_new_tokens=max_new_tokens, deadline=deadline)
    seconds = time.perf_counter() - started
    if generation.finish_reason == "timeout":
        return _fallback(
            question,
            sources,
            f"generation did not finish within its time budget ({seconds:.1f}s)",
            "timeout",
            generation.tokens,
            seconds,
        )
    numbers = cited_numbers(generation.text, len(sources))
    if not numbers:
        return _fallback(
            question,
            sources,
            "the generated answer cited none of the sources",
            "no_citation",
            generation.tokens,
            seconds,
        )
    given = citations_for(question, sources)
    return Answer(
        generation.text.strip(),
        _cited(given, numbers),
        given,
        False,
        None,
        generation.finish_reason,
        generation.tokens,
        seconds,
    )

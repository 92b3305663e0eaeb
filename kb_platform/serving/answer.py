"""/ask: numbered sources, a grounded prompt, a generated answer that cites them (or says the
sources do not contain the answer), and the extractive fallback (same numbered sources) when
generation times out or cites nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kb_platform.index.retriever import Hit
from kb_platform.models.generator import Generation
from kb_platform.serving.extractive import extractive_answer, snippet
from kb_platform.serving.generation import Generator
from kb_platform.serving.images import image_url
from kb_platform.serving.prompt import (
    REFUSAL,
    PromptImage,
    Source,
    build_prompt,
    cited_numbers,
    is_refusal,
    number_sources,
    strip_unknown_citations,
)
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
    refused: bool = False  # the model said the sources do not contain the answer


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
            kind="image" if source.is_image else "text",
            image_key=source.hit.source.get("image_key") if source.is_image else None,
            image_url=image_url(source.hit.source.get("image_key")) if source.is_image else None,
        )
        for source in sources
    ]


def _cited(given: list[Citation], numbers: list[int]) -> list[Citation]:
    return [given[n - 1] for n in numbers]


def _fallback(
    question: str,
    sources: list[Source],
    given: list[Citation],
    reason: str,
    finish: str,
    tokens: int,
    seconds: float,
) -> Answer:
    extract = extractive_answer(question, sources)
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


NO_SOURCES = (
    "No indexed source matches the question, so it cannot be answered from the knowledge base."
)


def stream_answer(
    question: str,
    hits: list[Hit],
    generator: Generator,
    *,
    max_new_tokens: int,
    deadline: float,
    max_source_chars: int,
    relevance: Callable[[str, list[Source]], float] | None = None,
    min_relevance: float = 0.0,
    question_image_text: str | None = None,
    images: tuple[PromptImage, ...] = (),
) -> Iterator[list[Citation] | str | Answer]:
    """The numbered sources as citations (once, first), the generated answer's text pieces as
    they come, then the final ``Answer``: its text is the one to keep (citations of sources
    never given are removed from it, and a timed-out, failed or uncited generation is replaced
    by the extractive answer). With ``relevance``, sources whose best similarity to the question
    (and the text read from its image) is under ``min_relevance`` get a refusal, not a
    generation."""
    sources = number_sources(hits)
    given = citations_for(question, sources)
    yield given
    if not sources:
        yield Answer(NO_SOURCES, [], [], True, "no sources retrieved", "stop", 0, 0.0)
        return
    if relevance is not None:
        best = relevance(f"{question} {question_image_text or ''}".strip(), sources)
        if best < min_relevance:
            yield Answer(
                REFUSAL,
                [],
                given,
                False,
                f"no source is close enough to the question (best similarity {best:.2f} < "
                f"{min_relevance:.2f})",
                "stop",
                0,
                0.0,
                refused=True,
            )
            return
    prompt = build_prompt(
        question,
        sources,
        max_source_chars=max_source_chars,
        question_image_text=question_image_text,
        images=images,
    )
    started = time.perf_counter()
    generation: Generation | None = None
    for item in generator.stream(prompt, max_new_tokens=max_new_tokens, deadline=deadline):
        if isinstance(item, Generation):
            generation = item
        else:
            yield item
    assert generation is not None, "a generator's stream ends with its Generation"
    yield settle(question, sources, given, generation, time.perf_counter() - started)


def settle(
    question: str,
    sources: list[Source],
    given: list[Citation],
    generation: Generation,
    seconds: float,
) -> Answer:
    """The answer a finished generation gives: cited, refused, or the extractive fallback;
    ``given`` are the sources' citations (``citations_for``)."""
    if generation.finish_reason == "error":
        return _fallback(
            question,
            sources,
            given,
            f"the generator failed: {generation.error or 'no reason given'}",
            "error",
            generation.tokens,
            seconds,
        )
    if generation.finish_reason == "timeout":
        return _fallback(
            question,
            sources,
            given,
            f"generation did not finish within its time budget ({seconds:.1f}s)",
            "timeout",
            generation.tokens,
            seconds,
        )
    text = strip_unknown_citations(generation.text, len(sources))
    numbers = cited_numbers(text, len(sources))
    refused = not numbers and is_refusal(text)
    if not numbers and not refused:
        return _fallback(
            question,
            sources,
            given,
            "the generated answer cited none of the sources",
            "no_citation",
            generation.tokens,
            seconds,
        )
    return Answer(
        REFUSAL if refused else text,
        _cited(given, numbers),
        given,
        False,
        None,
        generation.finish_reason,
        generation.tokens,
        seconds,
        refused=refused,
    )


def answer_question(question: str, hits: list[Hit], generator: Generator, **options: Any) -> Answer:
    """The final answer of ``stream_answer`` (same options), for callers that do not stream."""
    for item in stream_answer(question, hits, generator, **options):
        if isinstance(item, Answer):
            return item
    raise RuntimeError("stream_answer ended without its Answer")

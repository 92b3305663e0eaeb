"""The citation part of the generator's promotion gate: a fixed set of Cranfield questions, each
given the same hybrid sources from a Cranfield index family of the gate's own (built once,
reused by name), answered through the code /ask runs (kb_platform.serving.answer.stream_answer)
by the in-process generator (LocalAnswerGenerator), and scored by citation precision
(kb_platform.evaluation.answer_quality, as benchmarks/answers.py does)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from kb_platform.evaluation.answer_quality import CitationTally
from kb_platform.evaluation.cranfield import load_judgments, load_queries
from kb_platform.evaluation.cranfield_chunks import cranfield_chunks
from kb_platform.index.analysis import embedding_input
from kb_platform.index.lifecycle import delete_family, ensure_index
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Hit, Retriever
from kb_platform.index.writer import bulk_with_retries, index_actions
from kb_platform.resources.text_encoder import TextEncoderResource
from kb_platform.serving.answer import Answer, stream_answer

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 96  # the service's default (KB_SERVING_MAX_NEW_TOKENS), as the benchmark
MAX_SOURCE_CHARS = 700
BUDGET_S = 60.0


def ensure_cranfield_index(
    es: Elasticsearch, names: IndexNames, folder: Path, limit: int, encoder: TextEncoderResource
) -> int:
    """The index family ``names`` holding the first ``limit`` abstracts: kept when it holds
    them all, else (re)built. Returns its chunk count."""
    chunks = cranfield_chunks(folder, limit)
    if es.indices.exists_alias(name=names.read_alias):
        held = int(es.count(index=names.read_alias)["count"])
        if held == len(chunks):
            return held
        log.info("%s holds %d of %d chunks: rebuilding it", names.base, held, len(chunks))
        delete_family(es, names)
    started = time.perf_counter()
    vectors = encoder.embed([embedding_input(c["title"], c["text"]) for c in chunks]).vectors
    for chunk, vector in zip(chunks, vectors, strict=True):
        chunk["text_vector"] = vector.tolist()
    ensure_index(es, names)
    report = bulk_with_retries(es, index_actions(names.write_alias, chunks))
    if not report.ok:
        raise RuntimeError(f"indexing Cranfield into {names.base} failed: {report.failed[:3]}")
    es.indices.refresh(index=names.write_alias)
    log.info("indexed %d Cranfield chunks in %.0fs", len(chunks), time.perf_counter() - started)
    return len(chunks)


@dataclass(frozen=True)
class CitationQuestions:
    """The questions, the sources each is given, and the judgments that score the citations."""

    questions: list[tuple[str, str]]  # (query id, text)
    sources: dict[str, list[Hit]]
    judgments: dict[str, dict[str, int]]


def citation_questions(
    es: Elasticsearch,
    encoder: TextEncoderResource,
    folder: Path,
    names: IndexNames,
    *,
    count: int,
    k: int,
    index_docs: int,
) -> CitationQuestions:
    """The first ``count`` Cranfield questions with their top-``k`` hybrid sources."""
    ensure_cranfield_index(es, names, folder, index_docs, encoder)
    retriever = Retriever(es, lambda q: encoder.embed([q]).vectors[0], index=names.read_alias)
    questions = load_queries(folder)[:count]
    sources = {qid: retriever.hybrid(text, k=k) for qid, text in questions}
    return CitationQuestions(questions, sources, load_judgments(folder))


def answer(generator: Any, question: str, hits: list[Hit]) -> Answer:
    final = None
    for item in stream_answer(
        question,
        hits,
        generator,
        max_new_tokens=MAX_NEW_TOKENS,
        deadline=time.monotonic() + BUDGET_S,
        max_source_chars=MAX_SOURCE_CHARS,
    ):
        if isinstance(item, Answer):
            final = item
    assert final is not None, "stream_answer ends with its Answer"
    return final


def measure(model_dir: Path, asked: CitationQuestions, *, quantize: bool = True) -> CitationTally:
    """Every question answered by the model in ``model_dir`` (greedy: the same model and
    sources give the same answers), tallied against the judgments."""
    from kb_platform.models.generator import LocalGenerator
    from kb_platform.serving.generation import LocalAnswerGenerator

    generator = LocalAnswerGenerator(LocalGenerator(model_dir, quantize=quantize))
    tally = CitationTally()
    for qid, text in asked.questions:
        tally.add(answer(generator, text, asked.sources[qid]), asked.judgments.get(qid, {}))
    return tally

"""Answer quality and speed of each candidate answer model on Cranfield, through the code /ask
runs (kb_platform.serving.answer.stream_answer, the same prompt, sources and citation checks).

    flock /tmp/kb-bench.lock .venv/bin/python benchmarks/answers.py [--queries 225]
        [--models qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct,
                  smollm2-135m-instruct,gemma-3-270m] [--k 4] [--keep-index | --index-base B]

Indexes Cranfield's 1,400 abstracts (MiniLM vectors) into an index family of its own on
KB_ELASTICSEARCH_URL (or reuses one kept before), retrieves the top k chunks per query (hybrid,
as /ask does) once, then asks every model every query with those same sources and prints per
model:
- citation precision: the share of cited sources whose document is judged relevant to the
  query (any grade), beside the share of *given* sources that are (what a citer choosing at
  random would score);
- cited: the share of answers that cite at least one source; refused: the share that say the
  sources do not contain the answer; fallback: the share replaced by the extractive answer
  (uncited or timed out); off-topic refused: the share of 20 questions the collection cannot
  answer (kb_platform.evaluation.off_topic) that are refused;
- first-token and whole-answer latency (p50, p95), tokens per answer and decode tokens/s.
Cranfield's questions all have judged documents, so a refusal is never right by the
judgments: a model that refuses often is missing answers the sources hold.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.evaluation.answer_quality import CitationTally, judged_id
from kb_platform.evaluation.cranfield import load_judgments, load_queries
from kb_platform.evaluation.off_topic import OFF_TOPIC_QUESTIONS
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Hit, Retriever
from kb_platform.models import registry
from kb_platform.models.answerers import ANSWERERS
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.serving.answer import Answer, stream_answer
from kb_platform.serving.generation import (
    Generator,
    LlamaCppAnswerGenerator,
    LocalAnswerGenerator,
)
from kb_platform.serving.prompt import Source
from kb_platform.serving.relevance import best_similarity
from kb_platform.serving.settings import ServingSettings
from kb_platform_tests.serving.corpus_slice import index_slice

GEMMA = "gemma-3-270m"
MAX_NEW_TOKENS = 96  # the service's default (KB_SERVING_MAX_NEW_TOKENS)
MAX_SOURCE_CHARS = 700
BUDGET_S = 60.0
MIN_RELEVANCE = ServingSettings().min_source_similarity
Relevance = Callable[[str, list[Source]], float]


@dataclass
class Tally:
    model: str
    first_token_s: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    citations: CitationTally = field(default_factory=CitationTally)
    off_topic_refused: int = 0

    def add(self, answer: Answer, relevant: set[str], first: float, total: float) -> None:
        self.citations.add(answer, relevant)
        self.first_token_s.append(first)
        self.answer_s.append(total)
        self.tokens.append(answer.tokens)
        if answer.tokens > 1 and total - first > 0.05:  # streamed, not one piece at the end
            self.decode_tps.append((answer.tokens - 1) / (total - first))


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def generator_for(model: str) -> Generator:
    if model == GEMMA:
        return LocalAnswerGenerator(registry.generator())
    return LlamaCppAnswerGenerator(registry.chat_answerer(model))


def ask(
    generator: Generator, question: str, hits: list[Hit], relevance: Relevance
) -> tuple[Answer, float, float]:
    started = time.perf_counter()
    first = None
    answer = None
    for item in stream_answer(
        question,
        hits,
        generator,
        max_new_tokens=MAX_NEW_TOKENS,
        deadline=time.monotonic() + BUDGET_S,
        max_source_chars=MAX_SOURCE_CHARS,
        relevance=relevance,
        min_relevance=MIN_RELEVANCE,
    ):
        if isinstance(item, Answer):
            answer = item
        elif isinstance(item, str) and first is None:
            first = time.perf_counter() - started
    assert answer is not None
    total = time.perf_counter() - started
    return answer, first if first is not None else total, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=225, help="the first N Cranfield queries")
    parser.add_argument("--models", default=",".join([*ANSWERERS, GEMMA]))
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--keep-index", action="store_true")
    parser.add_argument("--index-base", help="a Cranfield index family kept by --keep-index")
    parser.add_argument("--show", type=int, default=2, help="answers printed per model")
    args = parser.parse_args()
    settings = get_settings()
    folder = settings.corpus_dir / "retrieval" / "cranfield"
    es = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
    names = IndexNames(args.index_base or f"answers-bench-{uuid.uuid4().hex[:8]}")
    if not args.index_base:
        started = time.perf_counter()
        count = index_slice(es, names, folder, 1400)
        print(f"indexed {count} chunks into {names.base} in {time.perf_counter() - started:.0f}s")
    try:
        encoder = registry.query_encoder()
        retriever = Retriever(es, lambda q: encoder.encode([q])[0], index=names.read_alias)
        queries = load_queries(folder)[: args.queries]
        judgments = load_judgments(folder)
        sources = {qid: retriever.hybrid(text, k=args.k) for qid, text in queries}
        off_topic = [(q, retriever.hybrid(q, k=args.k)) for q in OFF_TOPIC_QUESTIONS]

        def relevance(question: str, given: list[Source]) -> float:
            return best_similarity(encoder.encode, question, given)

        given = [h for qid, _ in queries for h in sources[qid]]
        given_relevant = sum(
            judged_id(h.doc_id) in judgments.get(qid, {})
            for qid, _ in queries
            for h in sources[qid]
        )
        tallies = []
        with printed_machine_load():
            for model in args.models.split(","):
                generator = generator_for(model)
                tally = Tally(generator.name)
                for n, (qid, text) in enumerate(queries):
                    answer, first, total = ask(generator, text, sources[qid], relevance)
                    tally.add(answer, set(judgments.get(qid, {})), first, total)
                    if n < args.show:
                        print(f"[{model}] {text}\n  -> {answer.text!r}")
                for question, hits in off_topic:
                    tally.off_topic_refused += ask(generator, question, hits, relevance)[0].refused
                tallies.append(tally)
                print(
                    f"{model}: {tally.citations.asked} answers in {sum(tally.answer_s):.0f}s",
                    flush=True,
                )
    finally:
        if not args.keep_index and not args.index_base:
            delete_family(es, names)
        elif args.keep_index:
            print(f"kept the index family {names.base} (--index-base {names.base})")
    print(
        f"\n{len(queries)} Cranfield queries, k={args.k} hybrid sources each; "
        f"{given_relevant / len(given):.3f} of the given sources are judged relevant\n"
    )
    print(
        "| model | citation precision | cited | refused | fallback | off-topic refused "
        "| first token p50/p95 | answer p50/p95 | tokens | decode tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in tallies:
        c = t.citations
        precision = c.precision if c.precision is not None else float("nan")
        print(
            f"| {t.model} | {precision:.3f} | {c.answers_citing / c.asked:.2f} "
            f"| {c.refused / c.asked:.2f} | {c.fallback / c.asked:.2f} "
            f"| {t.off_topic_refused / len(OFF_TOPIC_QUESTIONS):.2f} "
            f"| {_p(t.first_token_s, 50):.2f} / {_p(t.first_token_s, 95):.2f} s "
            f"| {_p(t.answer_s, 50):.2f} / {_p(t.answer_s, 95):.2f} s "
            f"| {statistics.mean(t.tokens):.0f} "
            f"| {statistics.mean(t.decode_tps) if t.decode_tps else float('nan'):.1f} |"
        )


if __name__ == "__main__":
    main()

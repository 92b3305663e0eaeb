"""Retrieval quality and speed on Cranfield 1400 through the real Elasticsearch index.

    .venv/bin/python benchmarks/retrieval.py [--corpus ../shared/corpus] [--keep-index]
        [--query-runtimes torch,onnx,onnx-int8]

Indexes the 1,400 abstracts (chunked, embedded with all-MiniLM-L6-v2) into a fresh chunk index
family, runs the 225 queries in each mode and prints: recall@10 and graded nDCG@10 per mode
(document level: a document's best chunk counts), kNN recall@10 against exact search, query
latency p50/p95 per mode (query encoding included), and indexing throughput. The documents are
embedded by the float MiniLM (as ingestion does); each query runtime (kb_platform.models.registry
QueryRuntime) is measured against that index, with its vectors' cosine to the float ones.
Needs Elasticsearch on KB_ELASTICSEARCH_URL (`kb-platform services up elasticsearch`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.chunking import split_windows
from kb_platform.config import get_settings
from kb_platform.evaluation.cranfield import load_documents, load_judgments, load_queries
from kb_platform.evaluation.metrics import ndcg_at, recall_at
from kb_platform.index.analysis import embedding_input
from kb_platform.index.lifecycle import delete_family, ensure_index
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Retriever
from kb_platform.index.writer import bulk_with_retries, index_actions
from kb_platform.models.registry import QueryRuntime, query_encoder, text_encoder, text_tokenizer
from kb_platform.resources.elasticsearch import ElasticsearchResource

K = 10
CHUNK_HITS = 50  # chunks fetched per query before collapsing to documents


def chunk_documents(folder: Path) -> list[dict]:
    tokenizer = text_tokenizer()
    chunks = []
    for doc in load_documents(folder):
        for n, window in enumerate(split_windows(doc.text, tokenizer)):
            chunks.append(
                {
                    "chunk_id": f"cran-{doc.doc_id}-{n}",
                    "doc_id": doc.doc_id,
                    "modality": "text",
                    "text": doc.text[window.char_start : window.char_end],
                    "title": doc.title,
                    "source_uri": f"cranfield:{doc.doc_id}",
                    "char_start": window.char_start,
                    "char_end": window.char_end,
                }
            )
    return chunks


def documents_of(hits: list) -> list[str]:
    ranked: list[str] = []
    for hit in hits:
        if hit.doc_id not in ranked:
            ranked.append(hit.doc_id)
    return ranked


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    parser.add_argument("--keep-index", action="store_true")
    parser.add_argument(
        "--query-runtimes",
        type=lambda v: [QueryRuntime(r) for r in v.split(",")],
        default=list(QueryRuntime),
        help="comma-separated: torch, onnx, onnx-int8 (default: all)",
    )
    args = parser.parse_args()
    folder = args.corpus / "retrieval" / "cranfield"

    settings = get_settings()
    es = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
    names = IndexNames("bench-cranfield")
    delete_family(es, names)
    encoder = text_encoder()

    chunks = chunk_documents(folder)
    started = time.perf_counter()
    vectors = encoder.encode([embedding_input(c["title"], c["text"]) for c in chunks])
    embed_s = time.perf_counter() - started
    for chunk, vector in zip(chunks, vectors, strict=True):
        chunk["text_vector"] = vector.tolist()
    ensure_index(es, names)
    started = time.perf_counter()
    report = bulk_with_retries(es, index_actions(names.write_alias, chunks))
    es.indices.refresh(index=names.write_alias)
    index_s = time.perf_counter() - started
    assert report.ok, report.failed[:5]

    torch.set_num_threads(1)  # one query at a time: one intra-op thread is fastest (DESIGN 7)
    queries, judgments = load_queries(folder), load_judgments(folder)
    reference = encoder.encode([text for _, text in queries])
    rows, cosines = [], {}
    for runtime in args.query_runtimes:
        query_vector = query_encoder(runtime).encode
        cosine = np.sum(reference * query_vector([text for _, text in queries]), axis=1)
        cosines[runtime] = (float(cosine.min()), float(cosine.mean()))
        retriever = Retriever(es, lambda q, f=query_vector: f([q])[0], index=names.read_alias)
        for warm in queries[:5]:
            retriever.hybrid(warm[1], k=K)
        for mode in ("bm25", "knn", "hybrid"):
            ndcgs, recalls, latencies = [], [], []
            for qid, text in queries:
                started = time.perf_counter()
                if mode == "hybrid":  # the metric is per document: fuse per document
                    hits = retriever.hybrid(text, k=CHUNK_HITS, per_document=True)
                else:
                    hits = retriever.search(text, mode=mode, k=CHUNK_HITS)
                latencies.append((time.perf_counter() - started) * 1000)
                ranked = documents_of(hits)
                gains = judgments.get(qid, {})
                ndcgs.append(ndcg_at(ranked, gains, K))
                recalls.append(recall_at(ranked, gains, K))
            rows.append(
                (
                    runtime.value,
                    mode,
                    statistics.mean(recalls),
                    statistics.mean(ndcgs),
                    *(percentile(latencies, q) for q in (50, 95)),
                )
            )

    # Approximate kNN against exact (brute force) cosine search, chunk level.
    ids = [c["chunk_id"] for c in chunks]
    overlaps = []
    for query in reference:
        exact = {ids[i] for i in np.argsort(-(vectors @ query))[:K]}
        approx = {h.chunk_id for h in retriever.knn_vector(query, K)}
        overlaps.append(len(exact & approx) / K)

    print(
        f"Cranfield: {len(load_documents(folder))} documents -> {len(chunks)} chunks, "
        f"{len(queries)} queries; graded nDCG@{K} with gains 4..1 for codes 1..4"
    )
    print(f"| query encoder | mode   | recall@{K} | nDCG@{K} | p50 ms | p95 ms |")
    print("|---------------|--------|-----------|---------|--------|--------|")
    for runtime, mode, recall, ndcg, p50, p95 in rows:
        print(
            f"| {runtime:<13} | {mode:<6} | {recall:9.3f} | {ndcg:7.3f} | {p50:6.1f} | {p95:6.1f} |"
        )
    for runtime, (low, mean) in cosines.items():
        print(f"query vectors {runtime}: cosine to the float ones {low:.4f} min, {mean:.4f} mean")
    print(f"kNN recall@{K} vs exact search: {statistics.mean(overlaps):.3f}")
    print(
        f"embedding: {len(chunks) / embed_s:.1f} chunks/s ({embed_s:.1f}s, 2 threads); "
        f"indexing: {len(chunks) / index_s:.1f} chunks/s ({index_s:.1f}s, bulk + refresh)"
    )
    if not args.keep_index:
        delete_family(es, names)
    es.close()


if __name__ == "__main__":
    with printed_machine_load():
        main()

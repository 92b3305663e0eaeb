"""``search_index_version``: the chunk index rebuilt from the stored embeddings as a new
version, the aliases swapped atomically; with checks on counts and kNN recall."""

import numpy as np
import pyarrow as pa
from dagster import AssetCheckResult, AssetIn, MetadataValue, Output, asset, asset_check

from kb_platform.index.clip_documents import clip_models, image_chunk_ids, with_clip
from kb_platform.index.documents import index_documents, vectors_of
from kb_platform.index.lifecycle import alias_targets, roll_out
from kb_platform.index.retriever import Retriever
from kb_platform.resources.elasticsearch import ElasticsearchResource

RECALL_QUERIES = 50
MIN_RECALL_AT_10 = 0.95


@asset(
    group_name="search",
    kinds={"elasticsearch"},
    ins={
        "text_embeddings": AssetIn("text_embeddings"),
        "image_embeddings": AssetIn("image_embeddings"),
    },
    description="Builds the next kb-chunks-v{N} from every stored embedding and moves the read "
    "and write aliases to it in one step; the previous version is kept. Materialize to roll out "
    "a new embedding model or checkpoint.",
)
def search_index_version(
    text_embeddings: pa.Table, image_embeddings: pa.Table, elasticsearch: ElasticsearchResource
) -> Output[str]:
    es = elasticsearch.client
    previous = alias_targets(es, elasticsearch.names.read_alias)
    new_index, report = roll_out(
        es,
        with_clip(index_documents(text_embeddings), image_embeddings),
        names=elasticsearch.names,
        replicas=elasticsearch.replicas,
    )
    return Output(
        new_index,
        metadata={
            "index": new_index,
            "previous": ", ".join(previous) or "none",
            "indexed": report.succeeded,
            "images": len(image_chunk_ids(image_embeddings)),
            "clip_versions": ", ".join(sorted(clip_models(image_embeddings))) or "none",
            "documents": len(set(text_embeddings.column("doc_id").to_pylist()))
            if text_embeddings.num_rows
            else 0,
        },
    )


def _stored(text_embeddings: pa.Table) -> tuple[set[str], set[str]]:
    if text_embeddings.num_rows == 0:
        return set(), set()
    return (
        set(text_embeddings.column("doc_id").to_pylist()),
        set(text_embeddings.column("chunk_id").to_pylist()),
    )


@asset_check(
    asset=search_index_version,
    additional_ins={
        "text_embeddings": AssetIn("text_embeddings"),
        "image_embeddings": AssetIn("image_embeddings"),
    },
    description="Documents, chunks and images behind the read alias equal the stored ones.",
)
def index_counts_match_stored(
    text_embeddings: pa.Table, image_embeddings: pa.Table, elasticsearch: ElasticsearchResource
) -> AssetCheckResult:
    es = elasticsearch.client
    alias = elasticsearch.names.read_alias
    docs, chunks = _stored(text_embeddings)
    images = len(image_chunk_ids(image_embeddings))
    es.indices.refresh(index=alias)
    indexed_chunks = es.count(index=alias, query={"term": {"kind": "text"}})["count"]
    indexed_images = es.count(index=alias, query={"term": {"kind": "image"}})["count"]
    indexed_docs = es.search(
        index=alias, size=0, aggs={"docs": {"cardinality": {"field": "doc_id"}}}
    )["aggregations"]["docs"]["value"]
    return AssetCheckResult(
        passed=(indexed_chunks, indexed_images, indexed_docs) == (len(chunks), images, len(docs)),
        metadata={
            "stored_chunks": len(chunks),
            "indexed_chunks": indexed_chunks,
            "stored_images": images,
            "indexed_images": indexed_images,
            "stored_documents": len(docs),
            "indexed_documents": indexed_docs,
        },
    )


def knn_recall_at_10(
    retriever: Retriever, ids: list[str], vectors: np.ndarray, queries: int, seed: int = 0
) -> float:
    """Mean share of the exact (brute force) top 10 that approximate kNN returns; a hit tied
    in similarity with the exact 10th counts as exact (duplicate chunks have equal vectors)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    position = {chunk_id: i for i, chunk_id in enumerate(ids)}
    recalls = []
    for pick in picks:
        similarity = vectors @ vectors[pick]
        k = min(10, len(ids))
        threshold = np.partition(-similarity, k - 1)[k - 1] * -1
        hits = retriever.knn_vector(vectors[pick], k)
        good = sum(similarity[position[h.chunk_id]] >= threshold - 1e-4 for h in hits)
        recalls.append(good / k)
    return float(np.mean(recalls)) if recalls else 1.0


@asset_check(
    asset=search_index_version,
    additional_ins={"text_embeddings": AssetIn("text_embeddings")},
    description=f"Approximate kNN recall@10 against exact search is at least {MIN_RECALL_AT_10}.",
)
def knn_recall_vs_exact(
    text_embeddings: pa.Table, elasticsearch: ElasticsearchResource
) -> AssetCheckResult:
    if text_embeddings.num_rows == 0:
        return AssetCheckResult(passed=True, metadata={"queries": 0})
    retriever = Retriever(
        elasticsearch.client, lambda q: None, index=elasticsearch.names.read_alias
    )
    ids = text_embeddings.column("chunk_id").to_pylist()
    recall = knn_recall_at_10(retriever, ids, vectors_of(text_embeddings), RECALL_QUERIES)
    return AssetCheckResult(
        passed=recall >= MIN_RECALL_AT_10,
        metadata={"recall_at_10": MetadataValue.float(recall), "queries": RECALL_QUERIES},
    )

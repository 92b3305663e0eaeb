"""``search_index``: each document's chunks in the Elasticsearch index behind the write alias."""

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    Backoff,
    Failure,
    Jitter,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)

from kb_platform.defs.document_checks import per_document_check
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.index.clip_documents import image_chunk_ids, with_clip
from kb_platform.index.documents import index_documents
from kb_platform.index.lifecycle import alias_targets, ensure_index
from kb_platform.index.writer import chunk_ids_of, replace_document_chunks
from kb_platform.resources.elasticsearch import ElasticsearchResource

# Elasticsearch unavailable or throttling: back off and try again (connection errors propagate).
SERVICE_RETRY = RetryPolicy(
    max_retries=4, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


@asset(
    partitions_def=documents_partitions,
    group_name="search",
    kinds={"elasticsearch"},
    retry_policy=SERVICE_RETRY,
    description="The document's chunks (with their CLIP vectors) and images upserted by id; "
    "what it no longer has removed.",
)
def search_index(
    context: AssetExecutionContext,
    text_embeddings: pa.Table,
    image_embeddings: pa.Table,
    elasticsearch: ElasticsearchResource,
) -> Output[None]:
    es = elasticsearch.client
    doc_id = context.partition_key
    ensure_index(es, elasticsearch.names, elasticsearch.replicas)
    index = elasticsearch.names.write_alias
    upserts, deletes = replace_document_chunks(
        es, index, doc_id, list(with_clip(index_documents(text_embeddings), image_embeddings))
    )
    failures = upserts.failed + deletes.failed
    if failures:
        raise Failure(
            description=f"{len(failures)} chunk writes failed for good",
            metadata={"failures": MetadataValue.json([list(f) for f in failures[:50]])},
            allow_retries=False,
        )
    return Output(
        None,
        metadata={
            "indexed_chunks": upserts.succeeded,
            "stale_chunks_removed": deletes.succeeded,
            "items_retried": upserts.retried + deletes.retried,
            "write_index": ",".join(alias_targets(es, index)),
        },
    )


@per_document_check(
    asset=search_index,
    additional_ins={
        "text_embeddings": AssetIn("text_embeddings"),
        "image_embeddings": AssetIn("image_embeddings"),
    },
    description="The index holds exactly the document's stored chunks and images.",
)
def search_index_matches_stored_chunks(
    context,
    text_embeddings: pa.Table,
    image_embeddings: pa.Table,
    elasticsearch: ElasticsearchResource,
) -> AssetCheckResult:
    doc_id = context.partition_key
    stored = set(text_embeddings.column("chunk_id").to_pylist()) | image_chunk_ids(image_embeddings)
    indexed = chunk_ids_of(elasticsearch.client, elasticsearch.names.read_alias, doc_id)
    return AssetCheckResult(
        passed=stored == indexed,
        metadata={
            "stored_chunks": len(stored),
            "indexed_chunks": len(indexed),
            "missing": len(stored - indexed),
            "unexpected": len(indexed - stored),
        },
    )

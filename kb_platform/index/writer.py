"""Writes to the chunk index: idempotent upserts by chunk_id, stale-chunk and document removal.

Partial bulk failures are retried for the failed items only (with backoff) when the failure is
transient (429, 5xx); items that fail for good (e.g. a mapping error) are reported, never ignored.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch, helpers

from kb_platform.index.analysis import analyze

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
PAGE = 1000


@dataclass
class BulkReport:
    succeeded: int = 0
    retried: int = 0
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (id, status, reason)

    @property
    def ok(self) -> bool:
        return not self.failed


def _attempt(es: Elasticsearch, actions: list[dict[str, Any]], report: BulkReport) -> list[dict]:
    """Sends one bulk request; returns the actions whose items failed transiently."""
    by_id = {a["_id"]: a for a in actions}
    retry: list[dict[str, Any]] = []
    for ok, item in helpers.streaming_bulk(
        es, actions, raise_on_error=False, raise_on_exception=False, max_retries=0, chunk_size=500
    ):
        op, result = next(iter(item.items()))
        if ok:
            report.succeeded += 1
            continue
        status = int(result.get("status", 0))
        if op == "delete" and status == 404:
            report.succeeded += 1  # already gone: the goal of a delete is reached
            continue
        if status in RETRYABLE_STATUS and result.get("_id") in by_id:
            retry.append(by_id[result["_id"]])
        else:
            reason = str(result.get("error", {}).get("reason", result.get("error")))
            report.failed.append((str(result.get("_id")), status, reason))
    return retry


def bulk_with_retries(
    es: Elasticsearch,
    actions: Iterable[dict[str, Any]],
    *,
    max_retries: int = 4,
    base_delay_s: float = 0.5,
) -> BulkReport:
    report = BulkReport()
    pending = list(actions)
    for attempt in range(max_retries + 1):
        if not pending:
            break
        if attempt:
            report.retried += len(pending)
            delay = base_delay_s * 2 ** (attempt - 1) * (1 + random.random())
            log.warning("retrying %d failed bulk items in %.1fs", len(pending), delay)
            time.sleep(delay)
        pending = _attempt(es, pending, report)
    for action in pending:
        report.failed.append((action["_id"], 429, "still failing after retries"))
    return report


def index_actions(index: str, documents: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Index (upsert) actions by chunk_id; each gets its analyzed ``search_text`` for BM25."""
    for doc in documents:
        if "search_text" not in doc:
            doc = {**doc, "search_text": analyze(f"{doc.get('title') or ''} {doc['text']}")}
        yield {"_op_type": "index", "_index": index, "_id": doc["chunk_id"], "_source": doc}


def chunk_locations(es: Elasticsearch, index: str, doc_id: str) -> set[tuple[str, str]]:
    """(index, chunk id) of every chunk stored for a document in ``index`` (a name, alias or
    pattern), paged with search_after rather than a scroll context."""
    found: set[tuple[str, str]] = set()
    after: list[Any] | None = None
    while True:
        response = es.search(
            index=index,
            query={"term": {"doc_id": doc_id}},
            sort=[{"chunk_id": "asc"}, {"_index": "asc"}],
            size=PAGE,
            source=False,
            search_after=after,
        )
        hits = response["hits"]["hits"]
        found.update((hit["_index"], hit["_id"]) for hit in hits)
        if len(hits) < PAGE:
            return found
        after = hits[-1]["sort"]


def chunk_ids_of(es: Elasticsearch, index: str, doc_id: str) -> set[str]:
    return {chunk_id for _, chunk_id in chunk_locations(es, index, doc_id)}


def delete_chunks(es: Elasticsearch, locations: Iterable[tuple[str, str]]) -> BulkReport:
    # The local node has no reindex module (no _delete_by_query): delete by id in bulk instead.
    actions = ({"_op_type": "delete", "_index": index, "_id": cid} for index, cid in locations)
    return bulk_with_retries(es, actions)


def delete_document(es: Elasticsearch, index_pattern: str, doc_id: str) -> BulkReport:
    """Removes a document's chunks from every index matching the pattern (all versions)."""
    es.indices.refresh(index=index_pattern)  # so recent writes are found
    report = delete_chunks(es, chunk_locations(es, index_pattern, doc_id))
    es.indices.refresh(index=index_pattern)
    return report


def replace_document_chunks(
    es: Elasticsearch, index: str, doc_id: str, documents: list[dict[str, Any]]
) -> tuple[BulkReport, BulkReport]:
    """Upserts a document's chunks, then removes the ones a re-processing no longer produced."""
    upserts = bulk_with_retries(es, index_actions(index, documents))
    es.indices.refresh(index=index)
    keep = {d["chunk_id"] for d in documents}
    stale = {(i, cid) for i, cid in chunk_locations(es, index, doc_id) if cid not in keep}
    deletes = delete_chunks(es, stale)
    es.indices.refresh(index=index)
    return upserts, deletes

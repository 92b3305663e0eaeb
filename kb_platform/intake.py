"""Intake: an ingest message's content stored under its doc_id, before any run starts.

Storing the original bytes content-addressed at intake means a run, a retry or a backfill of a
partition always processes exactly the bytes its key names, even if the source file changed,
and needs nothing but the partition key (no run config) to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kb_platform.contracts import IngestMessage, Modality, compute_doc_id
from kb_platform.errors import Corrupt
from kb_platform.resources.blob_store import BlobStore
from kb_platform.sources import read_content, source_uri


class Admission(BaseModel):
    """What is kept of an ingest message once its content is stored (no inline bytes)."""

    source_id: str
    source_uri: str
    modality: Modality
    content_type: str | None = None
    metadata: dict[str, Any] = {}


def original_key(doc_id: str) -> str:
    return f"originals/{doc_id}"


def admission_key(doc_id: str) -> str:
    return f"admissions/{doc_id}.json"


def admit(
    message: IngestMessage,
    store: BlobStore,
    *,
    allowed_roots: list[Path],
    max_bytes: int,
    s3_client: object | None = None,
) -> str:
    """Reads the message's content, stores it and the message's envelope; returns the doc_id.

    Idempotent: the same bytes always give the same doc_id and the same stored original.
    """
    content = read_content(
        message, allowed_roots=allowed_roots, max_bytes=max_bytes, s3_client=s3_client
    )
    doc_id = compute_doc_id(content)
    if not store.exists(original_key(doc_id)):
        store.put(original_key(doc_id), content)
    admission = Admission(
        source_id=message.source_id,
        source_uri=source_uri(message),
        modality=message.modality,
        content_type=message.content_type,
        metadata=message.metadata,
    )
    store.put(admission_key(doc_id), admission.model_dump_json().encode())
    return doc_id


def load_admitted(doc_id: str, store: BlobStore) -> tuple[Admission, bytes]:
    """The admission and original bytes of a partition, checked against its key."""
    admission = Admission.model_validate_json(store.get(admission_key(doc_id)))
    content = store.get(original_key(doc_id))
    if compute_doc_id(content) != doc_id:
        raise Corrupt("stored original does not match its doc_id", doc_id=doc_id)
    return admission, content

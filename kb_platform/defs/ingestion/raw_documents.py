"""``raw_documents``: an admitted original, its real type sniffed and its facts recorded."""

import hashlib

from dagster import AssetExecutionContext, MetadataValue, Output, asset

from kb_platform.contracts import Document, Modality
from kb_platform.defs.failures import typed_failures
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.errors import TooLarge, UnsupportedType
from kb_platform.extraction import AUDIO_PREFIX, is_supported
from kb_platform.extraction.sniffing import sniff_mime
from kb_platform.intake import load_admitted, original_key
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.processing import ProcessingResource


def modality_of(mime: str) -> Modality:
    if mime.startswith("image/"):
        return Modality.IMAGE
    if mime.startswith(AUDIO_PREFIX):
        return Modality.AUDIO
    if mime.startswith("text/") and mime not in ("text/html", "text/xml", "text/rtf"):
        return Modality.TEXT
    return Modality.DOCUMENT


@asset(
    partitions_def=documents_partitions,
    group_name="ingestion",
    kinds={"python"},
    description="The original bytes of each document, with their sniffed type and checksums.",
)
def raw_documents(
    context: AssetExecutionContext, blob_store: BlobStore, processing: ProcessingResource
) -> Output[Document]:
    doc_id = context.partition_key
    with typed_failures(doc_id):
        admission, content = load_admitted(doc_id, blob_store)
        if len(content) > processing.max_bytes:
            raise TooLarge(f"{len(content)} bytes is over {processing.max_bytes}", doc_id=doc_id)
        mime = sniff_mime(content)
        if not is_supported(mime):
            raise UnsupportedType(
                f"content is {mime} (declared {admission.content_type or 'nothing'})",
                doc_id=doc_id,
                source=admission.source_uri,
            )
    sha256 = hashlib.sha256(content).hexdigest()
    document = Document(
        doc_id=doc_id,
        source_id=admission.source_id,
        source_uri=admission.source_uri,
        modality=modality_of(mime),
        content_type=mime,
        declared_content_type=admission.content_type,
        size_bytes=len(content),
        sha256=sha256,
        blob_key=original_key(doc_id),
        # A PDF password stays in the admission record; it is not carried downstream.
        metadata={k: v for k, v in admission.metadata.items() if k != "password"},
    )
    return Output(
        document,
        metadata={
            "source_uri": admission.source_uri,
            "content_type": mime,
            "declared_content_type": admission.content_type or "",
            "declared_modality": admission.modality.value,
            "modality": document.modality.value,
            "size_bytes": len(content),
            "sha256": sha256,
            "md5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
            "stored_at": MetadataValue.url(blob_store.uri(document.blob_key)),
        },
    )

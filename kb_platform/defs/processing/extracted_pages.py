"""``extracted_pages``: text layer, page renders and embedded images of each document."""

from dagster import AssetExecutionContext, Backoff, Jitter, Output, RetryPolicy, asset

from kb_platform.contracts import Document, Modality, Page
from kb_platform.defs.failures import typed_failures
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.extraction import extract
from kb_platform.extraction.stored import store_pages
from kb_platform.intake import load_admitted
from kb_platform.isolation import run_isolated
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.processing import ProcessingResource

STORAGE_RETRY = RetryPolicy(
    max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


@asset(
    partitions_def=documents_partitions,
    group_name="processing",
    kinds={"python"},
    retry_policy=STORAGE_RETRY,
    description="Pages of each document: text layer with positions, renders, embedded images.",
)
def extracted_pages(
    context: AssetExecutionContext,
    raw_documents: Document,
    blob_store: BlobStore,
    processing: ProcessingResource,
) -> Output[list[Page]]:
    document = raw_documents
    if document.modality is Modality.AUDIO:
        return Output([], metadata={"pages": 0, "skipped": "audio has no pages"})
    with typed_failures(document.doc_id):
        admission, content = load_admitted(document.doc_id, blob_store)
        extracted = run_isolated(
            extract,
            content,
            document.content_type,
            limits=processing.limits(),
            password=admission.metadata.get("password"),
            timeout_s=processing.timeout_s(document.modality),
            what=f"extraction of {document.content_type} document {document.doc_id}",
        )
    pages = store_pages(blob_store, document.doc_id, extracted)
    context.log.info("%s: %d pages extracted", document.doc_id, len(pages))
    return Output(
        pages,
        metadata={
            "pages": len(pages),
            "pages_needing_ocr": sum(p.needs_ocr for p in pages),
            "embedded_images": sum(len(p.images) for p in pages),
            "text_layer_chars": sum(len(p.text) for p in pages),
        },
    )

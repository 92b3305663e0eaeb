"""``ocr_text``: the final text of every page, from its text layer or from Tesseract."""

from dagster import AssetExecutionContext, Output, asset

from kb_platform.contracts import Document, Page, PageText
from kb_platform.defs.failures import typed_failures
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.ocr.pages import page_texts
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.processing import ProcessingResource


@asset(
    partitions_def=documents_partitions,
    group_name="processing",
    kinds={"python"},
    description="Text of every page: the text layer where usable, Tesseract OCR elsewhere.",
)
def ocr_text(
    context: AssetExecutionContext,
    raw_documents: Document,
    extracted_pages: list[Page],
    blob_store: BlobStore,
    processing: ProcessingResource,
) -> Output[list[PageText]]:
    with typed_failures(raw_documents.doc_id):
        texts, timed_out = page_texts(
            extracted_pages,
            blob_store.get,
            languages=processing.ocr_languages,
            page_timeout_s=processing.ocr_page_timeout_s,
            total_timeout_s=processing.timeout_s(raw_documents.modality),
        )
    ocr_pages = [t for t in texts if t.method == "ocr"]
    confidences = [t.ocr_confidence for t in ocr_pages if t.ocr_confidence is not None]
    if timed_out:
        context.log.warning("OCR timed out on pages %s of %s", timed_out, raw_documents.doc_id)
    return Output(
        texts,
        metadata={
            "pages": len(texts),
            "ocr_pages": len(ocr_pages),
            "ocr_timed_out_pages": len(timed_out),
            "empty_pages": sum(not t.text.strip() for t in texts),
            "mean_ocr_confidence": round(sum(confidences) / len(confidences), 2)
            if confidences
            else 0.0,
            "rotated_pages": sum(t.ocr_rotation != 0 for t in ocr_pages),
        },
    )

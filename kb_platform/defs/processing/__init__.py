"""Documents to text: page extraction, OCR, transcription and chunking, with quality checks."""

from dagster import AssetSelection, Definitions, define_asset_job

from kb_platform.defs.processing.checks import ocr_text_quality, text_chunks_bounds
from kb_platform.defs.processing.extracted_pages import extracted_pages
from kb_platform.defs.processing.ocr_text import ocr_text
from kb_platform.defs.processing.text_chunks import text_chunks
from kb_platform.defs.processing.transcripts import transcripts

# One run per document: its original through to its chunks in the index, with the checks.
process_documents = define_asset_job(
    "process_documents",
    selection=AssetSelection.groups("ingestion", "processing", "embeddings")
    | AssetSelection.assets("search_index", "clip_pairs"),
    description="Process one document partition from its stored original to indexed chunks.",
)

defs = Definitions(
    assets=[extracted_pages, ocr_text, transcripts, text_chunks],
    asset_checks=[ocr_text_quality, text_chunks_bounds],
    jobs=[process_documents],
)

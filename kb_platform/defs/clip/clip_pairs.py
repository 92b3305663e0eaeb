"""``clip_pairs``: the image-text pairs a document contributes to CLIP training."""

import pyarrow as pa
from dagster import Output, asset

from kb_platform.contracts import Page, PageText
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.training.pairs import document_pairs, is_held_out, pairs_table


@asset(
    partitions_def=documents_partitions,
    group_name="clip_training",
    kinds={"parquet"},
    io_manager_key="parquet_io_manager",
    description="Page renders with their text, figures with captions, images with OCR text.",
)
def clip_pairs(extracted_pages: list[Page], ocr_text: list[PageText]) -> Output[pa.Table]:
    pairs = document_pairs(extracted_pages, ocr_text)
    held_out = bool(pairs) and is_held_out(pairs[0].doc_id)
    return Output(
        pairs_table(pairs),
        metadata={"pairs": len(pairs), "split": "held_out" if held_out else "train"},
    )

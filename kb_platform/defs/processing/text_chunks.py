"""``text_chunks``: token-aware chunks with provenance, from page texts or transcripts."""

from dagster import AssetExecutionContext, Output, asset

from kb_platform.chunking import chunk_pages, chunk_transcript
from kb_platform.contracts import Chunk, Document, PageText, TranscriptSegment
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.models.registry import text_tokenizer


@asset(
    partitions_def=documents_partitions,
    group_name="processing",
    kinds={"python"},
    description="Chunks of about 200 MiniLM tokens (at most 240) overlapping by 40, each citable.",
)
def text_chunks(
    context: AssetExecutionContext,
    raw_documents: Document,
    ocr_text: list[PageText],
    transcripts: list[TranscriptSegment],
) -> Output[list[Chunk]]:
    tokenizer = text_tokenizer()
    chunks = chunk_pages(raw_documents, ocr_text, tokenizer)
    chunks += chunk_transcript(raw_documents, transcripts, tokenizer)
    tokens = [c.token_count for c in chunks]
    return Output(
        chunks,
        metadata={
            "chunks": len(chunks),
            "tokens": sum(tokens),
            "max_chunk_tokens": max(tokens, default=0),
        },
    )

"""``transcripts``: timed speech segments of audio documents (faster-whisper, tiny.en)."""

from dagster import AssetExecutionContext, Output, asset

from kb_platform.contracts import Document, Modality, TranscriptSegment
from kb_platform.defs.failures import typed_failures
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.intake import load_admitted
from kb_platform.isolation import run_isolated
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.processing import ProcessingResource


@asset(
    partitions_def=documents_partitions,
    group_name="processing",
    kinds={"python"},
    description="Transcribed segments with start/end times; empty for documents without audio.",
)
def transcripts(
    context: AssetExecutionContext,
    raw_documents: Document,
    blob_store: BlobStore,
    processing: ProcessingResource,
) -> Output[list[TranscriptSegment]]:
    if raw_documents.modality is not Modality.AUDIO:
        return Output([], metadata={"segments": 0, "skipped": "not audio"})
    # faster-whisper (CTranslate2, PyAV) loads only in runs that have audio to transcribe.
    from kb_platform.audio.transcription import transcribe

    with typed_failures(raw_documents.doc_id):
        _, content = load_admitted(raw_documents.doc_id, blob_store)
        segments = run_isolated(
            transcribe,
            content,
            doc_id=raw_documents.doc_id,
            max_duration_s=processing.max_audio_seconds,
            timeout_s=processing.timeout_audio_s,
            what=f"transcription of {raw_documents.doc_id}",
        )
    return Output(
        segments,
        metadata={
            "segments": len(segments),
            "audio_seconds": segments[-1].end_s if segments else 0.0,
            "words": sum(len(s.text.split()) for s in segments),
        },
    )

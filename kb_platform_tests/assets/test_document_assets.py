from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from kb_platform.chunking import MAX_CHUNK_TOKENS
from kb_platform.contracts import Chunk, Document, Modality, Page, PageText
from kb_platform.resources.processing import ProcessingResource


def test_born_digital_pdf_keeps_text_layer_positions_and_renders(
    materialize_file, corpus_dir: Path
) -> None:
    path = corpus_dir / "documents/py-pdf-sample-files/026-latex-multicolumn/multicolumn.pdf"
    doc_id, result = materialize_file(path)
    document: Document = result.output_for_node("raw_documents")
    assert document.doc_id == doc_id and document.content_type == "application/pdf"
    pages: list[Page] = result.output_for_node("extracted_pages")
    assert pages and all(p.render is not None for p in pages)
    assert not any(p.needs_ocr for p in pages)
    first = pages[0]
    span = first.spans[0]
    assert span.bbox is not None and first.text[span.char_start : span.char_end].strip()
    texts: list[PageText] = result.output_for_node("ocr_text")
    assert {t.method for t in texts} == {"text_layer"}
    chunks: list[Chunk] = result.output_for_node("text_chunks")
    assert chunks
    for chunk in chunks:
        page_text = texts[chunk.page - 1].text
        assert page_text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.token_count <= MAX_CHUNK_TOKENS
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"ocr_text_quality": True, "text_chunks_bounds": True}


def test_rotated_scan_is_ocred_upright(materialize_file, corpus_dir: Path) -> None:
    path = corpus_dir / "ocr/tesseract/phototest-rotated-R.png"
    _, result = materialize_file(path, modality=Modality.IMAGE)
    document: Document = result.output_for_node("raw_documents")
    assert document.modality is Modality.IMAGE
    (text,) = result.output_for_node("ocr_text")
    assert text.method == "ocr" and text.ocr_rotation == 270
    assert "quick brown dog jumped over the lazy fox" in " ".join(text.text.split())


def _error_class(result) -> str:
    (failure,) = result.get_step_failure_events()
    return failure.step_failure_data.user_failure_data.metadata["error_class"].value


@pytest.mark.numerics
def test_spoken_sample_is_transcribed_with_timestamps(materialize_file, workdir: Path) -> None:
    wav = workdir / "speech.wav"
    sentence = "Kafka delivers documents to the knowledge base every morning."
    subprocess.run(["espeak-ng", "-s", "130", "-w", str(wav), sentence], check=True)
    _, result = materialize_file(wav, modality=Modality.AUDIO)
    document: Document = result.output_for_node("raw_documents")
    assert document.modality is Modality.AUDIO
    segments = result.output_for_node("transcripts")
    heard = " ".join(s.text for s in segments).lower()
    assert sum(word in heard for word in ("kafka", "documents", "knowledge", "morning")) >= 3, heard
    assert segments[0].start_s >= 0 and segments[-1].end_s > segments[0].start_s
    (chunk,) = result.output_for_node("text_chunks")
    assert chunk.start_s == segments[0].start_s and chunk.end_s == segments[-1].end_s


def test_password_from_message_metadata_opens_encrypted_pdf(
    materialize_file, corpus_dir: Path
) -> None:
    path = corpus_dir / "documents/docling/pdf_password/sources/2206.01062_pg3.pdf"
    _, locked = materialize_file(path, raise_on_error=False)
    assert not locked.success and _error_class(locked) == "Encrypted"
    _, opened = materialize_file(path, metadata={"password": "1234"})
    assert opened.output_for_node("text_chunks")
    document: Document = opened.output_for_node("raw_documents")
    assert "password" not in document.metadata


def test_time_limit_really_stops_extraction(
    materialize_file, corpus_dir: Path, processing: ProcessingResource
) -> None:
    path = corpus_dir / "documents/py-pdf-sample-files/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"
    strict = ProcessingResource(**{**processing.model_dump(), "timeout_document_s": 0.5})
    started = time.monotonic()
    _, result = materialize_file(path, processing_override=strict, raise_on_error=False)
    assert not result.success and _error_class(result) == "Timeout"
    assert time.monotonic() - started < 30


def test_corrupt_pdf_fails_typed_without_retry(materialize_file, corpus_dir: Path) -> None:
    path = corpus_dir / "documents/py-pdf-sample-files/018-base14-fonts/unreadablemetadata.pdf"
    if not path.exists():
        path = next((corpus_dir / "documents").rglob("unreadablemetadata.pdf"))
    _, result = materialize_file(path, raise_on_error=False)
    assert _error_class(result) == "Corrupt"
    failure = result.get_step_failure_events()[0]
    assert failure.step_failure_data.user_failure_data.metadata["retryable"].value is False
    assert len(result.get_step_failure_events()) == 1  # failed once, no retry

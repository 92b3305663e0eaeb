"""Quality checks of OCR and chunk outputs, built on great-expectations, per document."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
)

from kb_platform.chunking import MAX_CHUNK_TOKENS
from kb_platform.contracts import Chunk, PageText
from kb_platform.defs.document_checks import per_document_check
from kb_platform.defs.processing.ocr_text import ocr_text
from kb_platform.defs.processing.text_chunks import text_chunks
from kb_platform.quality.expectations import ExpectationOutcome, expectations_module, validate

MAX_EMPTY_PAGE_SHARE = 0.5
MIN_MEAN_OCR_CONFIDENCE = 60.0


def _result(outcomes: list[ExpectationOutcome], severity: AssetCheckSeverity) -> AssetCheckResult:
    return AssetCheckResult(
        passed=all(o.success for o in outcomes),
        severity=severity,
        metadata={
            o.name: f"{'ok' if o.success else 'FAILED'} (observed {o.observed})" for o in outcomes
        },
    )


@per_document_check(
    asset=ocr_text,
    description="Share of empty pages and mean OCR confidence.",
)
def ocr_text_quality(ocr_text: list[PageText]) -> AssetCheckResult:
    if not ocr_text:
        return AssetCheckResult(passed=True, metadata={"pages": 0})
    gxe = expectations_module()
    frame = pd.DataFrame(
        {
            "empty": [float(not p.text.strip()) for p in ocr_text],
            "ocr_confidence": [p.ocr_confidence for p in ocr_text],
        }
    )
    expectations = [gxe.ExpectColumnMeanToBeBetween(column="empty", max_value=MAX_EMPTY_PAGE_SHARE)]
    if frame["ocr_confidence"].notna().any():
        expectations.append(
            gxe.ExpectColumnMeanToBeBetween(
                column="ocr_confidence", min_value=MIN_MEAN_OCR_CONFIDENCE
            )
        )
    # Scans of poor quality exist: a warning for a person to look at, not a blocked pipeline.
    return _result(validate(frame, expectations), AssetCheckSeverity.WARN)


@per_document_check(
    asset=text_chunks,
    description="Chunks are non-empty and within the token budget.",
)
def text_chunks_bounds(text_chunks: list[Chunk]) -> AssetCheckResult:
    if not text_chunks:
        return AssetCheckResult(passed=True, metadata={"chunks": 0})
    gxe = expectations_module()
    frame = pd.DataFrame(
        {
            "tokens": [c.token_count for c in text_chunks],
            "text": [c.text for c in text_chunks],
            "chunk_id": [c.chunk_id for c in text_chunks],
        }
    )
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(column="tokens", min_value=1, max_value=MAX_CHUNK_TOKENS),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="chunk_id"),
    ]
    return _result(validate(frame, expectations), AssetCheckSeverity.ERROR)

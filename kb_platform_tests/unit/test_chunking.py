import itertools

import pytest

from kb_platform.chunking import chunk_transcript, split_windows
from kb_platform.contracts import Document, Modality, TranscriptSegment
from kb_platform.models.registry import text_tokenizer

TEXT = " ".join(
    f"Sentence number {i} talks about wing flutter and boundary layers." for i in range(80)
)


def test_windows_respect_the_budget_and_overlap() -> None:
    tokenizer = text_tokenizer()
    windows = split_windows(TEXT, tokenizer, max_tokens=50, overlap=10, tail_slack=0)
    assert len(windows) > 5
    assert all(w.token_count <= 50 for w in windows)
    for before, after in itertools.pairwise(windows):
        assert after.char_start < before.char_end  # they overlap
        assert after.char_start > before.char_start  # and always advance
    assert windows[-1].char_end == len(TEXT.rstrip())


def test_windows_prefer_sentence_ends() -> None:
    windows = split_windows(TEXT, text_tokenizer(), max_tokens=50, overlap=10)
    assert sum(TEXT[w.char_end - 1] == "." for w in windows[:-1]) >= len(windows) - 2


def test_a_short_tail_joins_the_last_window() -> None:
    tokenizer = text_tokenizer()
    total = len(tokenizer.encode(TEXT[:700], add_special_tokens=False).ids)
    windows = split_windows(TEXT[:700], tokenizer, max_tokens=total - 10, overlap=5, tail_slack=20)
    assert len(windows) == 1 and windows[0].token_count == total
    assert len(split_windows(TEXT[:700], tokenizer, max_tokens=total - 10, tail_slack=0)) == 2


def test_overlap_must_be_smaller_than_window() -> None:
    with pytest.raises(ValueError):
        split_windows(TEXT, text_tokenizer(), max_tokens=10, overlap=10)


def test_empty_text_has_no_windows() -> None:
    assert split_windows("   ", text_tokenizer()) == []


def test_transcript_chunks_keep_time_spans() -> None:
    document = Document(
        doc_id="0" * 16,
        source_id="a",
        source_uri="file:///a.wav",
        modality=Modality.AUDIO,
        content_type="audio/x-wav",
        declared_content_type=None,
        size_bytes=1,
        sha256="0",
        blob_key="originals/a",
    )
    segments = [
        TranscriptSegment(document.doc_id, i * 2.0, i * 2.0 + 2.0, f"Segment {i} says words.", -0.1)
        for i in range(60)
    ]
    chunks = chunk_transcript(document, segments, text_tokenizer(), max_tokens=40, overlap=8)
    assert len(chunks) > 3
    assert chunks[0].start_s == 0.0
    assert chunks[-1].end_s == 120.0
    assert all(c.start_s < c.end_s for c in chunks)
    assert len({c.chunk_id for c in chunks}) == len(chunks)

"""Cranfield abstracts as index chunks, cut as the pipeline cuts text (ids ``cran-<n>-<i>``): the
indexes of the service tests, the benchmarks and the generator's citation gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kb_platform.chunking import split_windows
from kb_platform.evaluation.answer_quality import CRANFIELD_PREFIX
from kb_platform.evaluation.cranfield import load_documents
from kb_platform.models.registry import text_tokenizer


def cranfield_chunks(folder: Path, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` abstracts of the collection in ``folder``, chunked."""
    tokenizer = text_tokenizer()
    chunks = []
    for doc in load_documents(folder)[:limit]:
        for n, window in enumerate(split_windows(doc.text, tokenizer)):
            chunks.append(
                {
                    "chunk_id": f"{CRANFIELD_PREFIX}{doc.doc_id}-{n}",
                    "doc_id": f"{CRANFIELD_PREFIX}{doc.doc_id}",
                    "modality": "text",
                    "text": doc.text[window.char_start : window.char_end],
                    "title": doc.title,
                    "source_uri": f"cranfield:{doc.doc_id}",
                    "page": 1,
                    "char_start": window.char_start,
                    "char_end": window.char_end,
                }
            )
    return chunks

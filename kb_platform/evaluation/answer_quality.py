"""How well answers cite, scored against relevance judgments (benchmarks/answers.py and the
generator's promotion gate share it): citation precision is the share of cited sources whose
document is judged relevant to the question (any grade), counted over the answers that were
generated and cite (refusals and extractive fallbacks cite nothing of the model's own)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kb_platform.serving.answer import Answer

CRANFIELD_PREFIX = "cran-"  # Cranfield documents' ids in an index (kb_platform_tests corpus_slice)


def judged_id(doc_id: str) -> str:
    """The id the judgments use for an indexed document's id."""
    return doc_id.removeprefix(CRANFIELD_PREFIX)


@dataclass
class CitationTally:
    asked: int = 0
    answers_citing: int = 0  # generated answers that cite at least one source
    cited: int = 0  # citations in those answers
    cited_relevant: int = 0  # ... whose document is judged relevant to the question
    refused: int = 0
    fallback: int = 0  # replaced by the extractive answer (uncited, timed out, failed)

    def add(self, answer: Answer, relevant: Iterable[str]) -> None:
        """Counts one answer; ``relevant``: the judged-relevant document ids of its question."""
        judged = set(relevant)
        self.asked += 1
        if answer.refused:
            self.refused += 1
        elif answer.extractive:
            self.fallback += 1
        else:
            self.answers_citing += 1
            self.cited += len(answer.citations)
            self.cited_relevant += sum(judged_id(c.doc_id) in judged for c in answer.citations)

    @property
    def precision(self) -> float | None:
        """Citation precision, or None when no generated answer cited anything."""
        return self.cited_relevant / self.cited if self.cited else None


def citation_precision(
    answers: Iterable[tuple[str, Answer]], judgments: Mapping[str, Mapping[str, int]]
) -> CitationTally:
    """The tally of ``(query id, answer)`` pairs against ``query -> doc -> grade`` judgments."""
    tally = CitationTally()
    for query_id, answer in answers:
        tally.add(answer, judgments.get(query_id, {}))
    return tally

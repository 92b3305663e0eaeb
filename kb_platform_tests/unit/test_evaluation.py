import math
from pathlib import Path

import pytest

from kb_platform.evaluation.cranfield import load_documents, load_judgments, load_queries
from kb_platform.evaluation.metrics import ndcg_at, recall_at


def test_perfect_ranking_has_ndcg_one() -> None:
    gains = {"a": 3, "b": 1}
    assert ndcg_at(["a", "b", "x"], gains) == pytest.approx(1.0)
    assert recall_at(["a", "b", "x"], gains) == 1.0


def test_swapped_ranking_is_penalised() -> None:
    gains = {"a": 3, "b": 1}
    expected = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at(["b", "a"], gains) == pytest.approx(expected)
    assert recall_at(["x", "a"], gains, k=1) == 0.0


def test_cranfield_collection_parses(corpus_dir: Path) -> None:
    folder = corpus_dir / "retrieval" / "cranfield"
    documents, queries, judgments = (
        load_documents(folder),
        load_queries(folder),
        load_judgments(folder),
    )
    assert len(documents) == 1400 and documents[0].doc_id == "1"
    assert len(queries) == 225 and queries[-1][0] == "225"
    assert judgments["1"]["184"] == 3  # code 2 -> gain 3
    assert all(1 <= g <= 4 for q in judgments.values() for g in q.values())

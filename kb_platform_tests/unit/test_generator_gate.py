"""The generator's training data and promotion gate as pure functions: documents rebuilt from
their chunks, the weights' version, the gate's verdicts, and citation precision scored on
answers settled by the code /ask runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kb_platform.chunking import chunk_pages
from kb_platform.contracts import Document, Modality, PageText
from kb_platform.evaluation.answer_quality import citation_precision, judged_id
from kb_platform.index.retriever import Hit
from kb_platform.models.generator import Generation
from kb_platform.models.registry import text_tokenizer
from kb_platform.serving.answer import Answer, citations_for, settle
from kb_platform.serving.prompt import number_sources
from kb_platform.training.generator_data import all_chunks, document_texts
from kb_platform.training.generator_promotion import generator_gate, weights_version

PAGE = " ".join(
    f"Sentence {i} says how the boundary layer of a swept wing thickens at Mach {i / 10:.1f}."
    for i in range(60)
)


def _document(doc_id: str) -> Document:
    return Document(
        doc_id=doc_id,
        source_id=f"{doc_id}.txt",
        source_uri=f"file:///{doc_id}.txt",
        modality=Modality.TEXT,
        content_type="text/plain",
        declared_content_type=None,
        size_bytes=len(PAGE),
        sha256="0" * 64,
        blob_key=f"originals/{doc_id}",
    )


def test_documents_are_rebuilt_from_their_overlapping_chunks() -> None:
    pages = [PageText("d1", 1, PAGE, "text_layer"), PageText("d1", 2, PAGE[:300], "text_layer")]
    chunks = chunk_pages(_document("d1"), pages, text_tokenizer(), max_tokens=60, overlap=15)
    assert len(chunks) > 5 and chunks[1].char_start < chunks[0].char_end  # they overlap
    other = chunk_pages(_document("d2"), [PageText("d2", 1, PAGE[:200], "x")], text_tokenizer())
    shuffled = list(reversed(chunks)) + other
    texts = document_texts(shuffled)
    assert texts == {"d1": f"{PAGE.strip()}\n\n{PAGE[:300].strip()}", "d2": PAGE[:200].strip()}
    # What Dagster's file IO managers hand over for one, several or no partitions.
    assert all_chunks({"b": other, "a": chunks, "c": None}) == chunks + other
    assert all_chunks(other) == other and all_chunks(None) == []


def test_the_version_names_the_weights(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    save_file({"w": torch.ones(3)}, str(tmp_path / "a" / "model.safetensors"))
    save_file({"w": torch.ones(3)}, str(tmp_path / "b" / "model.safetensors"))
    save_file({"w": torch.zeros(3)}, str(tmp_path / "c" / "model.safetensors"))
    assert weights_version(tmp_path / "a") == weights_version(tmp_path / "b")
    assert weights_version(tmp_path / "a") != weights_version(tmp_path / "c")
    assert weights_version(tmp_path / "a").startswith("gen-")
    with pytest.raises(FileNotFoundError):
        weights_version(tmp_path)


def test_the_gate_on_perplexity_and_citation_precision() -> None:
    assert generator_gate(90.0, 100.0, 0.0).passed
    assert generator_gate(100.0, 100.0, 0.0).passed
    worse = generator_gate(101.0, 100.0, 0.0)
    assert not worse.passed and "perplexity" in worse.reason
    assert generator_gate(101.0, 100.0, 0.02).passed  # within the tolerance
    assert not generator_gate(math.inf, 100.0, 0.5).passed
    assert not generator_gate(math.nan, 100.0, 0.5).passed  # a diverged candidate
    assert generator_gate(90.0, 100.0, 0.0, 0.40, 0.42, max_precision_drop=0.05).passed
    dropped = generator_gate(90.0, 100.0, 0.0, 0.30, 0.42, max_precision_drop=0.05)
    assert not dropped.passed and "citation precision" in dropped.reason
    assert not generator_gate(90.0, 100.0, 0.0, None, 0.42).passed  # cites nothing any more
    assert generator_gate(90.0, 100.0, 0.0, 0.3, None).passed  # the baseline cited nothing


def _hit(n: int, doc: str) -> Hit:
    text = f"Source {n} reports the pressure distribution on a slender delta wing."
    return Hit(f"cran-{doc}-0", 1.0 / n, {"doc_id": f"cran-{doc}", "text": text, "title": doc})


def _answer(question: str, hits: list[Hit], generated: str) -> Answer:
    sources = number_sources(hits)
    generation = Generation(generated, 12, "stop", 0.1)
    return settle(question, sources, citations_for(question, sources), generation, 0.1)


def test_citation_precision_counts_the_cited_sources_judged_relevant() -> None:
    question = "what is the pressure distribution on a delta wing?"
    hits = [_hit(1, "11"), _hit(2, "12"), _hit(3, "13")]
    judgments = {"q1": {"11": 4, "13": 1}, "q2": {"12": 2}, "q3": {"11": 3}}
    answers = [
        ("q1", _answer(question, hits, "According to [1] it peaks near the apex [2][3].")),
        ("q2", _answer(question, hits, "According to [2] it is flat.")),
        ("q3", _answer(question, hits, "It is not known.")),  # cites nothing: extractive
    ]
    assert [len(a.citations) for _, a in answers[:2]] == [3, 1]
    assert answers[2][1].extractive
    tally = citation_precision(answers, judgments)
    assert (tally.asked, tally.answers_citing, tally.fallback, tally.refused) == (3, 2, 1, 0)
    assert (tally.cited, tally.cited_relevant) == (4, 3)  # [1] and [3] of q1, [2] of q2
    assert tally.precision == pytest.approx(0.75)
    assert citation_precision([answers[2]], judgments).precision is None
    assert judged_id("cran-12") == "12" and judged_id("12") == "12"

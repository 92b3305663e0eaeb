"""The chunk index on the real Elasticsearch: template, upserts, stale chunks, deletes,
partial bulk failures, alias roll-outs under concurrent reads, hybrid retrieval."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from elasticsearch import Elasticsearch

from kb_platform.index.lifecycle import (
    alias_targets,
    delete_family,
    ensure_index,
    roll_out,
    versions,
)
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Filters, Retriever
from kb_platform.index.writer import (
    bulk_with_retries,
    chunk_ids_of,
    delete_document,
    index_actions,
    replace_document_chunks,
)
from kb_platform.models.registry import text_encoder


@pytest.fixture
def names(es: Elasticsearch, unique_name: str) -> Iterator[IndexNames]:
    names = IndexNames(unique_name)
    yield names
    delete_family(es, names)


def _doc(doc_id: str, n: int, text: str, vector: np.ndarray) -> dict:
    return {
        "chunk_id": f"{doc_id}-p0001-{n:05d}",
        "doc_id": doc_id,
        "modality": "document",
        "text": text,
        "title": doc_id,
        "source_uri": f"file:///{doc_id}.pdf",
        "page": 1,
        "char_start": 0,
        "char_end": len(text),
        "text_vector": vector.tolist(),
    }


def _random_vectors(count: int, seed: int = 1) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_template_gives_every_version_the_mapping(es: Elasticsearch, names: IndexNames) -> None:
    index = ensure_index(es, names)
    assert index == names.index(1)
    assert alias_targets(es, names.read_alias) == alias_targets(es, names.write_alias) == [index]
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["properties"]["text_vector"]["index_options"]["type"] == "int8_hnsw"
    assert mapping["properties"]["clip_vector"]["similarity"] == "cosine"
    # vectors are searchable but not kept in _source (a hit's fetch would parse them for nothing)
    assert {"text_vector", "clip_vector"} <= set(mapping["_source"]["excludes"])
    vector = _random_vectors(1)[0]
    replace_document_chunks(es, names.write_alias, "d9", [_doc("d9", 0, "a chunk", vector)])
    es.indices.refresh(index=names.write_alias)
    found = es.search(
        index=names.read_alias,
        knn={"field": "text_vector", "query_vector": vector.tolist(), "k": 1, "num_candidates": 10},
    )["hits"]["hits"]
    assert found[0]["_source"]["doc_id"] == "d9"
    assert "text_vector" not in found[0]["_source"] and found[0]["_source"]["text"] == "a chunk"
    assert ensure_index(es, names) == index  # idempotent


def test_upsert_is_idempotent_and_stale_chunks_go(es: Elasticsearch, names: IndexNames) -> None:
    ensure_index(es, names)
    vectors = _random_vectors(5)
    docs = [_doc("d1", i, f"chunk {i}", vectors[i]) for i in range(5)]
    for _ in range(2):
        upserts, _ = replace_document_chunks(es, names.write_alias, "d1", docs)
        assert upserts.ok and upserts.succeeded == 5
    assert es.count(index=names.read_alias)["count"] == 5
    # Re-processing produced only three chunks: the other two must not linger.
    _, deletes = replace_document_chunks(es, names.write_alias, "d1", docs[:3])
    assert deletes.succeeded == 2
    assert chunk_ids_of(es, names.read_alias, "d1") == {d["chunk_id"] for d in docs[:3]}


def test_deleting_a_document_removes_it_from_every_version(
    es: Elasticsearch, names: IndexNames
) -> None:
    vectors = _random_vectors(4)
    ensure_index(es, names)
    bulk_with_retries(es, index_actions(names.write_alias, [_doc("d2", 0, "x", vectors[0])]))
    roll_out(es, [_doc("d2", 0, "x", vectors[0]), _doc("d3", 0, "y", vectors[1])], names=names)
    report = delete_document(es, f"{names.prefix}*", "d2")
    assert report.ok and report.succeeded == 2  # one copy in v1, one in v2
    assert es.count(index=f"{names.prefix}*", query={"term": {"doc_id": "d2"}})["count"] == 0
    assert es.count(index=names.read_alias)["count"] == 1


def test_partial_bulk_failure_retries_only_failed_items_and_reports_bad_ones(
    es: Elasticsearch, names: IndexNames
) -> None:
    index = ensure_index(es, names)
    vectors = _random_vectors(3)
    good = [_doc("d4", i, f"chunk {i}", vectors[i]) for i in range(2)]
    bad = {**_doc("d4", 2, "wrong dims", vectors[2]), "text_vector": [0.1, 0.2]}
    report = bulk_with_retries(es, index_actions(index, [*good, bad]))
    assert report.succeeded == 2 and report.retried == 0
    assert [(cid, status) for cid, status, _ in report.failed] == [(bad["chunk_id"], 400)]

    # A real transient fault: the flood-stage block makes Elasticsearch answer 429 to writes.
    es.indices.put_settings(index=index, settings={"index.blocks.read_only_allow_delete": True})
    lift = threading.Timer(
        1.5,
        lambda: es.indices.put_settings(
            index=index, settings={"index.blocks.read_only_allow_delete": None}
        ),
    )
    lift.start()
    more = [_doc("d5", i, f"chunk {i}", vectors[i]) for i in range(2)]
    report = bulk_with_retries(es, index_actions(index, more), base_delay_s=0.5, max_retries=6)
    lift.join()
    assert report.ok and report.succeeded == 2 and report.retried >= 2


def test_roll_out_swaps_aliases_without_readers_seeing_an_empty_index(
    es: Elasticsearch, names: IndexNames
) -> None:
    vectors = _random_vectors(300, seed=3)
    docs = [_doc(f"d{i % 30}", i, f"chunk {i}", vectors[i]) for i in range(300)]
    ensure_index(es, names)
    bulk_with_retries(es, index_actions(names.write_alias, docs))
    es.indices.refresh(index=names.read_alias)

    counts: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            counts.append(es.count(index=names.read_alias)["count"])
            time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        new_index, report = roll_out(es, docs, names=names)
    finally:
        stop.set()
        reader.join()
    assert report.ok and new_index == names.index(2)
    assert versions(es, names) == [1, 2]  # the old version is kept
    assert alias_targets(es, names.read_alias) == [new_index]
    assert alias_targets(es, names.write_alias) == [new_index]
    assert counts and min(counts) == 300


@pytest.mark.numerics
def test_hybrid_retrieval_fuses_bm25_and_knn(es: Elasticsearch, names: IndexNames) -> None:
    ensure_index(es, names)
    encoder = text_encoder()
    texts = {
        "wing": "Flutter of swept aircraft wings at transonic speeds was measured in the tunnel.",
        "heat": "Heat transfer to a blunt body in hypersonic flow depends on the nose radius.",
        "layer": "The laminar boundary layer separates under an adverse pressure gradient.",
        "cake": "Mix the flour and sugar, then bake the cake for forty minutes.",
    }
    vectors = encoder.encode(list(texts.values()))
    docs = [_doc(key, 0, text, vectors[i]) for i, (key, text) in enumerate(texts.items())]
    docs[3]["modality"] = "text"
    bulk_with_retries(es, index_actions(names.write_alias, docs))
    es.indices.refresh(index=names.read_alias)
    retriever = Retriever(es, lambda q: encoder.encode([q])[0], index=names.read_alias)

    query = "vibration of wings in transonic flow"
    for mode in ("bm25", "knn", "hybrid"):
        hits = retriever.search(query, mode=mode, k=3)
        assert hits[0].doc_id == "wing", mode
    hybrid = retriever.hybrid(query, k=4)
    assert set(hybrid[0].ranks) == {"bm25", "knn"}  # found by both, fused first
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    assert hybrid[0].source["page"] == 1 and hybrid[0].source["source_uri"] == "file:///wing.pdf"

    only_text = retriever.knn("baking", k=4, filters=Filters(modality=["text"]))
    assert [h.doc_id for h in only_text] == ["cake"]

    # A second chunk of the wing document: per document, it still counts once.
    extra = _doc("wing", 1, "Wing vibration grows with transonic flow speed.", vectors[0])
    bulk_with_retries(es, index_actions(names.write_alias, [extra]))
    es.indices.refresh(index=names.read_alias)
    chunks = retriever.hybrid(query, k=4)
    assert [h.doc_id for h in chunks[:2]] == ["wing", "wing"]
    documents = retriever.hybrid(query, k=4, per_document=True)
    assert documents[0].doc_id == "wing"
    assert len({h.doc_id for h in documents}) == len(documents)

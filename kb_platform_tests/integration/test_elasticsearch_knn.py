"""The local node is a real Elasticsearch 8: int8_hnsw dense vectors, kNN and BM25 search."""

from __future__ import annotations

import numpy as np
from elasticsearch import Elasticsearch, helpers

DIMS = 384


def _mapping() -> dict:
    return {
        "properties": {
            "doc_id": {"type": "keyword"},
            "text": {"type": "text"},
            "text_vector": {
                "type": "dense_vector",
                "dims": DIMS,
                "index": True,
                "similarity": "cosine",
                "index_options": {"type": "int8_hnsw"},
            },
        }
    }


def test_server_is_elasticsearch_8(es: Elasticsearch) -> None:
    info = es.info()
    assert info["version"]["number"].startswith("8.")
    assert es.cluster.health(wait_for_status="yellow", timeout="30s")["status"] in {
        "green",
        "yellow",
    }


def test_int8_hnsw_knn_search_finds_nearest_vectors(es: Elasticsearch, unique_name: str) -> None:
    index = unique_name
    es.indices.create(index=index, mappings=_mapping(), settings={"number_of_replicas": 0})
    try:
        stored = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert stored["text_vector"]["index_options"]["type"] == "int8_hnsw"

        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(200, DIMS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        actions = (
            {
                "_index": index,
                "_id": f"c{i}",
                "doc_id": f"d{i % 20}",
                "text": f"chunk number {i} about {'wings' if i % 2 else 'engines'}",
                "text_vector": vectors[i].tolist(),
            }
            for i in range(len(vectors))
        )
        ok, errors = helpers.bulk(es, actions, refresh="wait_for", raise_on_error=False)
        assert (ok, errors) == (200, [])

        query = vectors[42] + 0.05 * rng.normal(size=DIMS).astype(np.float32)
        exact = np.argsort(-(vectors @ (query / np.linalg.norm(query))))[:10]
        hits = es.search(
            index=index,
            knn={
                "field": "text_vector",
                "query_vector": query.tolist(),
                "k": 10,
                "num_candidates": 100,
            },
            source=["doc_id"],
            size=10,
        )["hits"]["hits"]
        assert hits[0]["_id"] == "c42"
        overlap = len({h["_id"] for h in hits} & {f"c{i}" for i in exact})
        assert overlap >= 9, f"kNN recall@10 vs exact = {overlap / 10}"

        filtered = es.search(
            index=index,
            knn={
                "field": "text_vector",
                "query_vector": query.tolist(),
                "k": 5,
                "num_candidates": 100,
                "filter": {"term": {"doc_id": "d3"}},
            },
            size=5,
        )["hits"]["hits"]
        assert filtered and all(h["_source"]["doc_id"] == "d3" for h in filtered)

        bm25 = es.search(index=index, query={"match": {"text": "wings"}}, size=5)["hits"]["hits"]
        assert bm25 and all("wings" in h["_source"]["text"] for h in bm25)
    finally:
        es.indices.delete(index=index)

"""Retrieval over the chunk index: BM25, approximate kNN, and their reciprocal rank fusion;
with a CLIP encoder, cross-modal search too (text to image, image to image, image to text, and
text chunks fused with images).

The fusion runs here rather than in Elasticsearch: the server's RRF retriever needs a paid
licence. Both the Dagster checks and the BentoML service call this one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from elastic_transport import ApiResponseMeta
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.exceptions import HTTP_EXCEPTIONS

from kb_platform.config import get_settings
from kb_platform.index.analysis import analyze
from kb_platform.index.mapping import READ_ALIAS

if TYPE_CHECKING:
    from PIL import Image

Mode = Literal["bm25", "knn", "hybrid"]
SOURCE_FIELDS = [
    "chunk_id",
    "doc_id",
    "modality",
    "text",
    "title",
    "source_uri",
    "page",
    "char_start",
    "char_end",
    "start_s",
    "end_s",
    "image_key",
    "kind",
]
RRF_K = 60
NOT_IMAGES = {"term": {"kind": "image"}}


class ClipQueries(Protocol):
    """What cross-modal search needs of a CLIP encoder (kb_platform.models.clip_encoder)."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass(frozen=True)
class Filters:
    modality: Sequence[str] = ()
    doc_id: Sequence[str] = ()
    source_uri: Sequence[str] = ()

    def clauses(self) -> list[dict[str, Any]]:
        return [
            {"terms": {name: list(values)}}
            for name, values in (
                ("modality", self.modality),
                ("doc_id", self.doc_id),
                ("source_uri", self.source_uri),
            )
            if values
        ]


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    score: float
    source: dict[str, Any]
    ranks: dict[str, int] = field(default_factory=dict)  # mode -> 1-based rank it came with

    @property
    def doc_id(self) -> str:
        return str(self.source.get("doc_id"))


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuses rankings (ids best first): score(id) = sum over rankings of 1 / (k + rank)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def item_error(meta: ApiResponseMeta, response: dict[str, Any]) -> ApiError:
    """The exception one search of an ``msearch`` would have raised on its own (a missing index
    is a NotFoundError, an overloaded node a 429 or 503)."""
    status = int(response.get("status") or 500)
    error = response["error"]
    item_meta = ApiResponseMeta(
        status=status,
        http_version=meta.http_version,
        headers=meta.headers,
        duration=meta.duration,
        node=meta.node,
    )
    message = error.get("type", "error") if isinstance(error, dict) else str(error)
    return HTTP_EXCEPTIONS.get(status, ApiError)(message=message, meta=item_meta, body=response)


class Retriever:
    def __init__(
        self,
        es: Elasticsearch,
        encode_query: Callable[[str], np.ndarray],
        *,
        index: str = READ_ALIAS,
        num_candidates_factor: int = 10,
        rescore_oversample: float | None = 2.0,
        fusion_window: int = 50,
        rrf_k: int = RRF_K,
        clip: ClipQueries | None = None,
    ):
        self.es = es
        self.clip = clip
        self.encode_query = encode_query
        self.index = index
        self.num_candidates_factor = num_candidates_factor
        self.rescore_oversample = rescore_oversample
        self.fusion_window = fusion_window
        self.rrf_k = rrf_k

    @classmethod
    def from_settings(
        cls,
        es: Elasticsearch,
        encode_query: Callable[[str], np.ndarray],
        index: str,
        clip: ClipQueries | None = None,
    ) -> Retriever:
        settings = get_settings()
        return cls(
            es,
            encode_query,
            index=index,
            num_candidates_factor=settings.knn_num_candidates_factor,
            rescore_oversample=settings.knn_rescore_oversample or None,
            rrf_k=settings.rrf_k,
            clip=clip,
        )

    def _hits(self, response: dict[str, Any], mode: str) -> list[Hit]:
        return [
            Hit(h["_id"], float(h["_score"] or 0.0), h["_source"], {mode: rank})
            for rank, h in enumerate(response["hits"]["hits"], start=1)
        ]

    def _bm25_body(self, query: str, k: int, filters: Filters | None) -> dict[str, Any]:
        bool_query: dict[str, Any] = {
            "must": [{"match": {"search_text": analyze(query)}}],
            "must_not": [NOT_IMAGES],  # images carry their page's text: the chunks cite it
        }
        if filters and filters.clauses():
            bool_query["filter"] = filters.clauses()
        return {"query": {"bool": bool_query}, "size": k, "_source": SOURCE_FIELDS}

    def _knn_body(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int,
        filters: Filters | None,
        *,
        field_name: str = "text_vector",
        num_candidates: int | None = None,
        extra: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        knn: dict[str, Any] = {
            "field": field_name,
            "query_vector": np.asarray(vector, dtype=np.float32).tolist(),
            "k": k,
            "num_candidates": num_candidates or max(k * self.num_candidates_factor, 100),
        }
        if self.rescore_oversample:
            # int8 quantized candidates are re-scored with the full-precision vectors.
            knn["rescore_vector"] = {"oversample": self.rescore_oversample}
        clauses = [*(filters.clauses() if filters else []), *extra]
        if clauses:
            knn["filter"] = clauses
        return {"knn": knn, "size": k, "_source": SOURCE_FIELDS}

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        # the search API's keyword for a request body's "_source" is "source"
        params = {("source" if name == "_source" else name): v for name, v in body.items()}
        return self.es.search(index=self.index, **params)

    def _msearch(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several searches in one request (one round trip, run side by side by the server);
        a search that failed raises as it would have on its own."""
        searches: list[dict[str, Any]] = []
        for body in bodies:
            searches += [{}, body]
        result = self.es.msearch(index=self.index, searches=searches)
        responses = result["responses"]
        for response in responses:
            if "error" in response:
                raise item_error(result.meta, response)
        return responses

    def bm25(self, query: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        return self._hits(self._search(self._bm25_body(query, k, filters)), "bm25")

    def knn_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = 10,
        filters: Filters | None = None,
        *,
        field_name: str = "text_vector",
        num_candidates: int | None = None,
        extra: Sequence[dict[str, Any]] = (),
    ) -> list[Hit]:
        body = self._knn_body(
            vector, k, filters, field_name=field_name, num_candidates=num_candidates, extra=extra
        )
        return self._hits(self._search(body), "knn")

    def knn(self, query: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        return self.knn_vector(self.encode_query(query), k, filters)

    def hybrid(
        self,
        query: str,
        k: int = 10,
        filters: Filters | None = None,
        *,
        per_document: bool = False,
    ) -> list[Hit]:
        """BM25 and kNN fused by reciprocal rank. With ``per_document``, each list is first
        collapsed to documents (a document ranks where its best chunk ranks) and documents are
        fused: one hit per document, its best chunk as the citation."""
        window = max(k, self.fusion_window)
        vector = self.encode_query(query)
        lexical, semantic = self._msearch(
            [self._bm25_body(query, window, filters), self._knn_body(vector, window, filters)]
        )
        return self._fuse(
            [self._hits(lexical, "bm25"), self._hits(semantic, "knn")], k, per_document=per_document
        )

    def _fuse(self, lists: Sequence[list[Hit]], k: int, *, per_document: bool) -> list[Hit]:
        key = (lambda h: h.doc_id) if per_document else (lambda h: h.chunk_id)
        best: dict[str, Hit] = {}
        ranks: dict[str, dict[str, int]] = {}
        rankings: list[list[str]] = []
        for hits in lists:
            ranking: list[str] = []
            for hit in hits:
                item = key(hit)
                if item in ranking:
                    continue  # a document's later chunks do not move it
                ranking.append(item)
                best.setdefault(item, hit)
                mode, _ = next(iter(hit.ranks.items()))
                ranks.setdefault(item, {})[mode] = len(ranking)
            rankings.append(ranking)
        fused = reciprocal_rank_fusion(rankings, k=self.rrf_k)
        return [
            Hit(best[item].chunk_id, score, best[item].source, ranks[item])
            for item, score in fused[:k]
        ]

    def search(
        self, query: str, mode: Mode = "hybrid", k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        return {"bm25": self.bm25, "knn": self.knn, "hybrid": self.hybrid}[mode](query, k, filters)

    # Cross-modal search over the CLIP vectors: images are documents of kind "image", text
    # chunks carry the CLIP text tower's vector of their text.

    def _clip(self) -> ClipQueries:
        if self.clip is None:
            raise ValueError("cross-modal search needs a CLIP checkpoint (none is promoted)")
        return self.clip

    def clip_vector(
        self, vector: np.ndarray, kind: str, k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        clauses = [{"term": {"kind": kind}}, *(filters.clauses() if filters else [])]
        hits = self.knn_vector(vector, k, Filters(), field_name="clip_vector", extra=clauses)
        return [Hit(h.chunk_id, h.score, h.source, {f"clip_{kind}": r}) for h, r in _ranked(hits)]

    def text_to_image(self, query: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        return self.clip_vector(self._clip().encode_texts([query])[0], "image", k, filters)

    def image_to_image(
        self, image: Image.Image, k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        return self.clip_vector(self._clip().encode_images([image])[0], "image", k, filters)

    def image_to_text(
        self, image: Image.Image, k: int = 10, filters: Filters | None = None
    ) -> list[Hit]:
        return self.clip_vector(self._clip().encode_images([image])[0], "text", k, filters)

    def mixed(self, query: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """Text chunks (the hybrid ranking) and images (CLIP text to image) fused by reciprocal
        rank, so each modality has an equal say; a hit keeps the ranks it had in every list
        (bm25, knn and hybrid for chunks, clip_image for images) as its provenance."""
        window = max(k, self.fusion_window)
        text_hits = self.hybrid(query, window, filters)
        image_hits = self.text_to_image(query, window, filters)
        by_id = {hit.chunk_id: hit for hit in [*text_hits, *image_hits]}
        text_rank = {hit.chunk_id: rank for hit, rank in _ranked(text_hits)}
        fused = reciprocal_rank_fusion(
            [[h.chunk_id for h in text_hits], [h.chunk_id for h in image_hits]], k=self.rrf_k
        )
        hits = []
        for chunk_id, score in fused[:k]:
            hit = by_id[chunk_id]
            ranks = dict(hit.ranks)
            if chunk_id in text_rank:
                ranks["hybrid"] = text_rank[chunk_id]
            hits.append(Hit(chunk_id, score, hit.source, ranks))
        return hits


def _ranked(hits: list[Hit]) -> list[tuple[Hit, int]]:
    return [(hit, rank) for rank, hit in enumerate(hits, start=1)]

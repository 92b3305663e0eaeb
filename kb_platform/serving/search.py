"""/search: a text or image query to ranked hits, through kb_platform's Retriever."""

from __future__ import annotations

from PIL import Image

from kb_platform.index.retriever import Filters, Hit, Retriever
from kb_platform.serving.errors import ImageSearchUnavailable
from kb_platform.serving.schemas import Provenance, SearchFilters, SearchHit

PROVENANCE_FIELDS = ("source_uri", "title", "char_start", "char_end", "start_s", "end_s")


def filters_of(filters: SearchFilters) -> Filters:
    return Filters(modality=filters.modality, doc_id=filters.doc_id, source_uri=filters.source)


def to_search_hit(hit: Hit) -> SearchHit:
    source = hit.source
    kind = str(source.get("kind") or ("image" if source.get("image_key") else "text"))
    return SearchHit(
        chunk_id=hit.chunk_id,
        doc_id=hit.doc_id,
        page=source.get("page"),
        modality=source.get("modality"),
        kind=kind,
        text=source.get("text"),
        image_key=source.get("image_key"),
        score=hit.score,
        provenance=Provenance(
            **{name: source.get(name) for name in PROVENANCE_FIELDS}, ranks=dict(hit.ranks)
        ),
    )


def search_text(
    retriever: Retriever,
    query: str,
    *,
    mode: str,
    target: str,
    k: int,
    filters: Filters,
    clip_missing: str = "no CLIP checkpoint is configured",
) -> tuple[list[Hit], str]:
    """(hits, the retrieval that ran): chunks by BM25/kNN/hybrid, or images through CLIP."""
    if target == "images":
        if retriever.clip is None:
            raise ImageSearchUnavailable(clip_missing)
        return retriever.text_to_image(query, k, filters), "clip_text_to_image"
    return retriever.search(query, mode=mode, k=k, filters=filters), mode  # type: ignore[arg-type]


def search_image(
    retriever: Retriever,
    image: Image.Image,
    *,
    target: str,
    k: int,
    filters: Filters,
    clip_missing: str = "no CLIP checkpoint is configured",
) -> tuple[list[Hit], str]:
    if retriever.clip is None:
        raise ImageSearchUnavailable(clip_missing)
    if target == "images":
        return retriever.image_to_image(image, k, filters), "clip_image_to_image"
    return retriever.image_to_text(image, k, filters), "clip_image_to_text"

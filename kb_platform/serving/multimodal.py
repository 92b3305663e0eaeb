"""/ask over both modalities: which sources a question (and the image sent with it) gets, and
what of each image reaches the answer model.

Text chunks come from the request's mode; with a CLIP checkpoint, images come in too (CLIP text
to image for the question, image to image and image to text for an uploaded picture), fused by
reciprocal rank with at most ``max_images`` of them among the sources. An image source is given
to the model as the text shown with it and its page's text (OCR or text layer, from the chunks
on that page); an uploaded picture as the text Tesseract reads in it; a vision-language model
also gets the pictures themselves.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from elasticsearch import Elasticsearch
from PIL import Image

from kb_platform.index.retriever import NOT_IMAGES, Filters, Hit, Retriever, reciprocal_rank_fusion
from kb_platform.ocr.tesseract import recognize
from kb_platform.resources.blob_store import BlobStore
from kb_platform.serving.limits import load_image
from kb_platform.serving.prompt import PromptImage, clip_text
from kb_platform.serving.schemas import AskRequest, QuestionImage
from kb_platform.serving.search import filters_of
from kb_platform.serving.settings import ServingSettings

log = logging.getLogger(__name__)

PAGE_TEXT_CHARS = 1200  # of a page's chunks, kept per image source (the prompt clips again)
VISION_SIDE = 768  # longest side of an image sent to a vision-language model


@dataclass(frozen=True)
class AskContext:
    hits: list[Hit]  # numbered sources, best first; image hits carry their page's text
    question_image: QuestionImage | None = None
    images: tuple[PromptImage, ...] = ()  # for a vision-language model


def fuse_sources(lists: Sequence[list[Hit]], k: int, *, max_images: int, rrf_k: int) -> list[Hit]:
    """The ranked lists fused by reciprocal rank (a hit keeps the ranks it had in each list);
    the best ``k``, of which at most ``max_images`` are images."""
    by_id: dict[str, Hit] = {}
    ranks: dict[str, dict[str, int]] = {}
    for hits in lists:
        for hit in hits:
            by_id.setdefault(hit.chunk_id, hit)
            ranks.setdefault(hit.chunk_id, {}).update(hit.ranks)
    fused = reciprocal_rank_fusion([[h.chunk_id for h in hits] for hits in lists], k=rrf_k)
    chosen: list[Hit] = []
    images = 0
    for chunk_id, score in fused:
        hit = by_id[chunk_id]
        if hit.source.get("kind") == "image":
            if images >= max_images:
                continue
            images += 1
        chosen.append(Hit(chunk_id, score, hit.source, ranks[chunk_id]))
        if len(chosen) == k:
            break
    return chosen


def ask_hits(
    retriever: Retriever,
    question: str,
    picture: Image.Image | None,
    *,
    mode: str,
    k: int,
    filters: Filters,
    max_images: int,
) -> tuple[list[Hit], str]:
    """(sources, the retrievals that ran, joined by "+")."""
    window = max(k, retriever.fusion_window)
    lists = [retriever.search(question, mode=mode, k=window, filters=filters)]  # type: ignore[arg-type]
    label = [mode]
    if retriever.clip is not None:
        if picture is not None:
            lists.append(retriever.image_to_text(picture, window, filters))
            label.append("clip_image_to_text")
        if max_images > 0:
            if picture is not None:
                lists.append(retriever.image_to_image(picture, window, filters))
                label.append("clip_image_to_image")
            else:
                lists.append(retriever.text_to_image(question, window, filters))
                label.append("clip_text_to_image")
    if len(lists) == 1:
        return lists[0][:k], mode
    return fuse_sources(lists, k, max_images=max_images, rrf_k=retriever.rrf_k), "+".join(label)


def with_page_text(es: Elasticsearch, index: str, hits: list[Hit]) -> list[Hit]:
    """Image hits with ``page_text``: the text of the chunks on their page, in reading order
    (one search for all of them)."""
    pages = {
        (hit.doc_id, int(hit.source["page"]))
        for hit in hits
        if hit.source.get("kind") == "image" and hit.source.get("page") is not None
    }
    if not pages:
        return hits
    should = [
        {"bool": {"filter": [{"term": {"doc_id": doc_id}}, {"term": {"page": page}}]}}
        for doc_id, page in sorted(pages)
    ]
    response = es.search(
        index=index,
        query={"bool": {"should": should, "minimum_should_match": 1, "must_not": [NOT_IMAGES]}},
        size=20 * len(pages),
        source=["doc_id", "page", "text", "char_start"],
    )
    found: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for doc in response["hits"]["hits"]:
        source = doc["_source"]
        key = (str(source["doc_id"]), int(source["page"]))
        found.setdefault(key, []).append((int(source.get("char_start") or 0), source["text"]))
    enriched = []
    for hit in hits:
        key = (hit.doc_id, hit.source.get("page"))
        if hit.source.get("kind") == "image" and key in found:
            text = " ".join(text for _, text in sorted(found[key]))  # type: ignore[index]
            hit = replace(hit, source={**hit.source, "page_text": clip_text(text, PAGE_TEXT_CHARS)})
        enriched.append(hit)
    return enriched


def read_question_image(picture: Image.Image, *, languages: str, timeout_s: float) -> QuestionImage:
    """The uploaded picture's size and its text as Tesseract reads it; a picture Tesseract
    fails on still counts, with no text (logged)."""
    try:
        text = recognize(picture, languages=languages, timeout_s=timeout_s).text
    except Exception as exc:  # OCR is context here, not the answer: go on without its text
        log.warning("OCR of the question's image failed: %s: %s", type(exc).__name__, exc)
        text = ""
    return QuestionImage(
        width=picture.width, height=picture.height, ocr_text=" ".join(text.split())
    )


def png_for_vision(image: Image.Image) -> bytes:
    """A copy no larger than VISION_SIDE on its longest side, as PNG."""
    copy = image.convert("RGB")
    copy.thumbnail((VISION_SIDE, VISION_SIDE))
    buffer = io.BytesIO()
    copy.save(buffer, format="PNG")
    return buffer.getvalue()


def vision_images(
    picture: Image.Image | None, hits: list[Hit], blobs: BlobStore, *, max_images: int
) -> tuple[PromptImage, ...]:
    """What a vision-language model is shown: the question's picture, then the image sources'
    stored images (at most ``max_images`` of those; one that cannot be read is left out, logged)."""
    images = []
    if picture is not None:
        images.append(PromptImage("The image sent with the question", png_for_vision(picture)))
    numbered = [(n, h) for n, h in enumerate(hits, start=1) if h.source.get("kind") == "image"]
    for number, hit in numbered[:max_images]:
        try:
            stored = Image.open(io.BytesIO(blobs.get(str(hit.source["image_key"]))))
            images.append(PromptImage(f"Image of source [{number}]", png_for_vision(stored)))
        except Exception as exc:
            log.warning("image of source [%d] left out: %s: %s", number, type(exc).__name__, exc)
    return tuple(images)


class AskContextBuilder:
    """Everything /ask gives its answer model, from a request and a retriever."""

    def __init__(self, settings: ServingSettings, index: str, ocr_languages: str, blobs: BlobStore):
        self.settings = settings
        self.index = index
        self.ocr_languages = ocr_languages
        self.blobs = blobs

    def picture(self, request: AskRequest) -> Image.Image | None:
        """The image sent with the question, checked (kb_platform.serving.limits), if any."""
        if request.image is None:
            return None
        return load_image(
            request.image,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )

    def retrieve(
        self, retriever: Retriever, request: AskRequest, picture: Image.Image | None
    ) -> tuple[list[Hit], str]:
        """(the sources, image sources with their page's text; the retrievals that ran)."""
        hits, label = ask_hits(
            retriever,
            request.question,
            picture,
            mode=request.mode,
            k=request.k,
            filters=filters_of(request.filters),
            max_images=self.settings.ask_image_sources,
        )
        return with_page_text(retriever.es, self.index, hits), label

    def describe(self, hits: list[Hit], picture: Image.Image | None, *, vision: bool) -> AskContext:
        """The sources with what was read from the question's image, and the images a
        vision-language model is shown."""
        question_image = None
        if picture is not None:
            question_image = read_question_image(
                picture,
                languages=self.ocr_languages,
                timeout_s=self.settings.question_image_ocr_timeout_s,
            )
        images: tuple[PromptImage, ...] = ()
        if vision:
            images = vision_images(
                picture, hits, self.blobs, max_images=self.settings.ask_image_sources
            )
        return AskContext(hits, question_image, images)

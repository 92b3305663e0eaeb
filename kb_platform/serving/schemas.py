"""Typed requests and responses of the RAG service (their JSON Schema is the OpenAPI spec).

Text-only requests are JSON; a request with an image is ``multipart/form-data`` with the image
as a file part and the other fields as form fields (objects such as ``filters`` as JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from bentoml.validators import FileSchema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kb_platform.serving.openapi30 import nullable_fields, strict_bounds
from kb_platform.serving.settings import get_serving_settings

Mode = Literal["bm25", "knn", "hybrid"]
Target = Literal["chunks", "images"]
FinishReason = Literal["stop", "length", "timeout", "no_citation", "error"]

# An optional file part. FileSchema sits outside the union: it is unhashable, so it cannot be
# inside ``Path | None``; BentoML then stores the upload in a per-request temporary file.
ImageUpload = Annotated[Path | None, FileSchema()]


def _check_limits(query: str | None, k: int) -> None:
    settings = get_serving_settings()  # read when a request validates, not at import
    if query is not None and len(query) > settings.max_query_chars:
        raise ValueError(
            f"query is {len(query)} characters; the limit is {settings.max_query_chars}"
        )
    if k > settings.max_k:
        raise ValueError(f"k is {k}; the limit is {settings.max_k}")


class ApiModel(BaseModel):
    """Every request and response model: optional fields published as OpenAPI 3.0 nullables."""

    model_config = ConfigDict(json_schema_extra=nullable_fields)


class SearchFilters(ApiModel):
    model_config = ConfigDict(extra="forbid")

    modality: list[str] = Field(default_factory=list, max_length=8, description="e.g. text")
    doc_id: list[str] = Field(default_factory=list, max_length=100)
    source: list[str] = Field(
        default_factory=list, max_length=100, description="source URIs (exact)"
    )


class SearchRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(default=None, min_length=1, description="text query")
    image: ImageUpload = Field(default=None, description="image query (multipart file part)")
    k: int = Field(default=10, ge=1, description="number of hits")
    mode: Mode = Field(default="hybrid", description="text queries over chunks")
    target: Target = Field(
        default="chunks", description="chunks (text) or images; images and image queries use CLIP"
    )
    filters: SearchFilters = Field(default_factory=SearchFilters)

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.image is None):
            raise ValueError("give exactly one of query (text) or image (file upload)")
        _check_limits(self.query, self.k)
        return self


class Provenance(ApiModel):
    source_uri: str | None = None
    title: str | None = None
    char_start: int | None = None
    char_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    ranks: dict[str, int] = Field(
        default_factory=dict, description="1-based rank in each list the hit came from"
    )


class SearchHit(ApiModel):
    chunk_id: str
    doc_id: str
    page: int | None = None
    modality: str | None = None
    kind: str = Field(description="text (a chunk) or image")
    text: str | None = None
    image_key: str | None = None
    score: float
    provenance: Provenance


class SearchResponse(ApiModel):
    request_id: str | None = None
    mode: str
    hits: list[SearchHit]
    took_ms: float


class AskRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    image: ImageUpload = Field(default=None, description="optional image (multipart file part)")
    k: int = Field(default=4, ge=1, le=10, description="sources given to the generator")
    mode: Mode = "hybrid"
    filters: SearchFilters = Field(default_factory=SearchFilters)
    max_tokens: int | None = Field(default=None, ge=1, description="answer length cap (tokens)")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="generation budget; past it, an extractive answer is returned instead",
        json_schema_extra=strict_bounds,
    )

    @model_validator(mode="after")
    def _limits(self) -> AskRequest:
        _check_limits(self.question, self.k)
        return self


class Citation(ApiModel):
    number: int = Field(description="the [n] the answer uses")
    chunk_id: str
    doc_id: str
    page: int | None = None
    title: str | None = None
    source_uri: str | None = None
    snippet: str
    score: float
    kind: Literal["text", "image"] = Field(default="text", description="a chunk or an image")
    image_key: str | None = Field(default=None, description="images: the stored image's key")
    image_url: str | None = Field(
        default=None, description="images: where the service serves it (GET, same API key)"
    )


class TextPart(ApiModel):
    type: Literal["text"] = "text"
    text: str
    citations: list[int] = Field(default_factory=list, description="the [n] this text cites")


class ImagePart(ApiModel):
    """An image the answer cites, placed after the text that cites it."""

    type: Literal["image"] = "image"
    number: int = Field(description="the [n] of the image source")
    doc_id: str
    page: int | None = None
    image_key: str
    url: str = Field(description="GET it with the same API key; ?max_side=N for a smaller copy")
    caption: str | None = Field(default=None, description="the text shown with the image")
    score: float


AnswerPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class QuestionImage(ApiModel):
    """What the service read from the image sent with the question."""

    width: int
    height: int
    ocr_text: str = Field(description="its text as Tesseract read it (empty: none found)")


class AskResponse(ApiModel):
    request_id: str | None = None
    answer: str
    citations: list[Citation] = Field(description="the sources the answer cites, by number")
    sources: list[Citation] = Field(
        default_factory=list, description="every numbered source the answer was given"
    )
    parts: list[AnswerPart] = Field(
        default_factory=list,
        description="the answer as typed parts: text with its [n], and the images it cites",
    )
    question_image: QuestionImage | None = None
    extractive: bool = Field(description="true: sentences quoted from the sources (fallback)")
    refused: bool = Field(
        default=False, description="true: the model said the sources do not contain the answer"
    )
    fallback_reason: str | None = None
    finish_reason: FinishReason
    generator: str
    tokens_generated: int
    retrieval_ms: float
    first_token_ms: float | None = Field(
        default=None, description="from the start of generation to its first text piece"
    )
    generation_ms: float
    took_ms: float


class AskStreamEvent(ApiModel):
    """One server-sent event of /ask/stream (``event: <event>``, ``data: <data as JSON>``):
    ``sources`` (list of Citation), ``token`` ({"text"}), ``answer`` (AskResponse), ``error``."""

    event: Literal["sources", "token", "answer", "error"]
    data: Any

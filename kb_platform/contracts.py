"""Typed records that flow between the pipeline's steps (DESIGN.md section 3)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kb_platform.errors import InvalidMessage

MAX_INLINE_BYTES = 1024 * 1024
URI_SCHEMES = ("file://", "s3://")


class Modality(StrEnum):
    DOCUMENT = "document"
    IMAGE = "image"
    TEXT = "text"
    AUDIO = "audio"


def compute_doc_id(content: bytes) -> str:
    """The partition key: the same bytes are always the same document."""
    return hashlib.sha256(content).hexdigest()[:16]


class IngestMessage(BaseModel):
    """The value of a message on ``kb.ingest.<modality>`` (JSON); also what ``ingest`` builds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_id: str = Field(min_length=1, max_length=1024)
    uri: str | None = Field(default=None, max_length=4096)
    content_b64: str | None = None
    modality: Modality
    content_type: str | None = Field(default=None, max_length=255)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source_of_content(self) -> IngestMessage:
        if (self.uri is None) == (self.content_b64 is None):
            raise ValueError("exactly one of uri and content_b64 must be given")
        if self.uri is not None and not self.uri.startswith(URI_SCHEMES):
            raise ValueError(f"uri scheme not allowed (only {', '.join(URI_SCHEMES)}): {self.uri}")
        if self.content_b64 is not None and len(self.content_b64) > 4 * MAX_INLINE_BYTES // 3 + 4:
            raise ValueError(f"inline content over {MAX_INLINE_BYTES} bytes; send it by uri")
        return self

    def inline_content(self) -> bytes:
        assert self.content_b64 is not None
        try:
            return base64.b64decode(self.content_b64, validate=True)
        except binascii.Error as exc:
            raise InvalidMessage(f"content_b64 is not valid base64: {exc}") from exc

    @classmethod
    def parse(cls, raw: bytes | str) -> IngestMessage:
        """Parses a message value, turning every problem into one typed, non-retryable error."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise InvalidMessage(
                f"invalid ingest message: {exc.errors(include_url=False)}"
            ) from exc


@dataclass(frozen=True)
class Document:
    """A stored original: what ``raw_documents`` produces for one partition."""

    doc_id: str
    source_id: str
    source_uri: str
    modality: Modality
    content_type: str  # sniffed from the bytes
    declared_content_type: str | None
    size_bytes: int
    sha256: str
    blob_key: str  # where the original bytes are kept in the blob store
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or self.source_uri.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class TextSpan:
    """A run of text on a page with its character offsets in ``Page.text`` and its box (points)."""

    char_start: int
    char_end: int
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class ImageRef:
    """An image kept in the blob store: a page render, an embedded figure, or an uploaded image."""

    image_id: str
    blob_key: str
    width: int
    height: int
    kind: str  # "page" | "embedded" | "original"
    caption: str | None = None


@dataclass(frozen=True)
class Page:
    """One page (or the one 'page' of a text, office file or image) after extraction."""

    doc_id: str
    page_number: int  # 1-based
    text: str  # the text layer; empty when the page has none
    spans: tuple[TextSpan, ...] = ()
    render: ImageRef | None = None  # what OCR reads when the text layer is unusable
    images: tuple[ImageRef, ...] = ()
    needs_ocr: bool = False


@dataclass(frozen=True)
class PageText:
    """The final text of a page: its text layer, or what OCR read from its render."""

    doc_id: str
    page_number: int
    text: str
    method: str  # "text_layer" | "ocr"
    ocr_confidence: float | None = None
    ocr_rotation: int = 0
    word_confidences: tuple[float, ...] = ()


@dataclass(frozen=True)
class TranscriptSegment:
    doc_id: str
    start_s: float
    end_s: float
    text: str
    avg_logprob: float


@dataclass(frozen=True)
class Chunk:
    """The unit that is embedded, indexed and cited, with the provenance to cite it."""

    chunk_id: str
    doc_id: str
    text: str
    token_count: int
    source_uri: str
    title: str
    modality: Modality
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None

"""``GET /images/<doc_id>/<image>.png``: the stored page renders and figures that answers cite.

Behind the same API keys as the rest of the service (ServingMiddleware). Only keys of the form
the pipeline writes (``images/<doc_id>/<image_id>.png``) and only images the index still holds
are served, so a document deleted from the index stops being served too. A stored image larger
than the response limit is refused (413) unless a smaller copy is asked for (``?max_side=N``).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from elasticsearch import Elasticsearch
from PIL import Image, UnidentifiedImageError

from kb_platform.resources.blob_store import BlobStore
from kb_platform.serving.errors import ServingError

PREFIX = "images/"
_KEY = re.compile(r"^images/[A-Za-z0-9._:-]{1,200}/[A-Za-z0-9._-]{1,120}\.png$")
MIN_SIDE = 16


def is_image_key(key: str | None) -> bool:
    """A key the pipeline writes for a page render or figure (no other blob is served)."""
    return bool(key) and _KEY.match(key) is not None and ".." not in key  # type: ignore[arg-type]


def image_url(image_key: str | None) -> str | None:
    """Where the service serves a stored image (relative to the service's base URL)."""
    return f"/{image_key}" if is_image_key(image_key) else None


@dataclass(frozen=True)
class ServedImage:
    data: bytes
    media_type: str
    width: int
    height: int


def _not_found(key: str) -> ServingError:
    return ServingError(404, f"no indexed image {key!r}", code="image_not_found")


class ImageEndpoint:
    def __init__(
        self,
        blobs: BlobStore,
        es: Elasticsearch,
        index: str,
        *,
        max_bytes: int,
        max_pixels: int,
        max_side: int,
    ):
        self.blobs = blobs
        self.es = es
        self.index = index
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_side = max_side

    def fetch(self, key: str, side: int | None = None) -> ServedImage:
        if not is_image_key(key):
            raise _not_found(key)
        if side is not None and not MIN_SIDE <= side <= self.max_side:
            raise ServingError(
                400, f"max_side must be between {MIN_SIDE} and {self.max_side}", code="bad_request"
            )
        indexed = self.es.count(
            index=self.index,
            query={"bool": {"filter": [{"term": {"kind": "image"}}, {"term": {"image_key": key}}]}},
        )["count"]
        if not indexed or not self.blobs.exists(key):
            raise _not_found(key)
        data = self.blobs.get(key)
        if side is None and len(data) > self.max_bytes:
            raise ServingError(
                413,
                f"image is {len(data):,} bytes; the limit is {self.max_bytes:,} bytes: ask for a "
                f"smaller copy with ?max_side=N (at most {self.max_side})",
                code="image_too_large",
            )
        return self._decode(data, side)

    def _decode(self, data: bytes, side: int | None) -> ServedImage:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=("PNG",))
                width, height = image.size
                if width * height > self.max_pixels:
                    raise ServingError(
                        413,
                        f"stored image has {width * height:,} pixels; the limit is "
                        f"{self.max_pixels:,}",
                        code="image_too_many_pixels",
                    )
                if side is None or max(width, height) <= side:
                    return ServedImage(data, "image/png", width, height)
                image.thumbnail((side, side))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombWarning) as exc:
            raise ServingError(
                500, f"the stored image cannot be read: {type(exc).__name__}", code="bad_image"
            ) from None
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ServedImage(buffer.getvalue(), "image/png", image.width, image.height)

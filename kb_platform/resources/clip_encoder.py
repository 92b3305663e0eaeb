"""CLIP embeddings for the assets, with the same two transports as the text embeddings: the warm
encoder service (``service_url`` set: the run process loads no model and sends the images' file
bytes) or the promoted checkpoint loaded in this process. One encoder
(kb_platform.models.clip_encoder), two ways to reach it."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from kb_platform.resources.encoder_service import EncoderServiceResource
from kb_platform.training.promotion import Promoted
from kb_platform.training.spec import SPEC, ClipSpec


class ClipEncoderResource(EncoderServiceResource):
    request_items: int = 32  # texts and images per request
    request_bytes: int = 8 * 1024 * 1024  # base64 of the images in one request, at most

    def embed(
        self, checkpoint: Promoted, images: Sequence[bytes], texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unit-length vectors of ``images`` (image file bytes) and of ``texts``, made by
        ``checkpoint``."""
        if not self.service_url:
            from kb_platform.models.registry import clip_encoder

            encoder = clip_encoder(Path(checkpoint.export_dir))
            pictures = [Image.open(io.BytesIO(data)) for data in images]
            return encoder.encode_images(pictures), encoder.encode_texts(list(texts))
        items = [
            {"clip_version": checkpoint.version, "kind": "image", "data": _b64(data)}
            for data in images
        ] + [{"clip_version": checkpoint.version, "kind": "text", "data": t} for t in texts]
        client = self._service()
        parts = [client.embed_clip(request) for request in self._requests(items)]
        if not parts:  # nothing to embed: empty rows of the checkpoint's width
            width = ClipSpec.load(Path(checkpoint.export_dir) / SPEC).embed_dim
            return np.zeros((0, width), np.float32), np.zeros((0, width), np.float32)
        vectors = np.concatenate(parts)
        return vectors[: len(images)], vectors[len(images) :]

    def _requests(self, items: list[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
        request: list[dict[str, str]] = []
        size = 0
        for item in items:
            if request and (
                len(request) >= self.request_items or size + len(item["data"]) > self.request_bytes
            ):
                yield request
                request, size = [], 0
            request.append(item)
            size += len(item["data"])
        if request:
            yield request


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

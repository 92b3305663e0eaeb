"""Text embeddings for the assets, as a resource with two transports: the warm encoder service
(``service_url`` set: the run process loads no model) or the same encoder in this process
(tests, ``--in-process``, a laptop without the services). One implementation of the transform
(kb_platform.models.text_encoder), two ways to reach it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb_platform.resources.encoder_service import EncoderServiceResource


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # (n, 384) float32, unit length
    model: str  # the encoder version stored with the vectors


class TextEncoderResource(EncoderServiceResource):
    # texts per request: small requests from several runs share the model's batches fairly and
    # each stays far inside the timeout; the service joins them into larger batches
    request_texts: int = 64

    def embed(self, texts: Sequence[str]) -> Embedded:
        if not self.service_url:
            from kb_platform.models.registry import text_encoder

            encoder = text_encoder()
            return Embedded(encoder.encode(list(texts)), encoder.version)
        client = self._service()
        info = client.model()
        parts = [
            client.embed_texts(texts[start : start + self.request_texts])
            for start in range(0, len(texts), self.request_texts)
        ]
        empty = np.zeros((0, int(str(info["dimensions"]))), dtype=np.float32)
        return Embedded(np.concatenate(parts) if parts else empty, str(info["text_model"]))

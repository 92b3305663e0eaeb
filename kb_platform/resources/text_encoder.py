"""Text embeddings for the assets, as a resource with two transports: the warm encoder service
(``service_url`` set: the run process loads no model) or the same encoder in this process
(tests, ``--in-process``, a laptop without the services). One implementation of the transform
(kb_platform.models.text_encoder), two ways to reach it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from kb_platform.encoder_service.client import EncoderClient


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # (n, 384) float32, unit length
    model: str  # the encoder version stored with the vectors


class TextEncoderResource(ConfigurableResource):
    service_url: str | None = None  # e.g. http://kb-encoder:3000; unset: in process
    service_token: str | None = None  # EnvVar("KB_ENCODER_TOKEN") where a service is used
    timeout_s: float = 120.0
    request_texts: int = 256  # texts per request; the service batches requests together

    _client: EncoderClient | None = PrivateAttr(default=None)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _service(self) -> EncoderClient:
        """The service's client, made on first use (in a run or outside one)."""
        if self._client is None:
            assert self.service_url
            self._client = EncoderClient(
                self.service_url, self.service_token, timeout_s=self.timeout_s
            )
        return self._client

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

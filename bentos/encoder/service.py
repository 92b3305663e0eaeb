"""kb-platform encoder service: MiniLM text embeddings and CLIP text and image embeddings (the
promoted checkpoint) for ingestion, warm before it is ready.

    bentoml serve bentos/encoder/service.py:EncoderService      # from the checkout
    bentoml build -f bentos/encoder/bentofile.yaml .            # a bento

The Dagster assets call it through ``TextEncoderResource`` and ``ClipEncoderResource`` (with
``service_url``); the model code is kb_platform's own (``kb_platform.models``), the one the
assets run in process without it.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import Shape

from kb_platform.encoder_service.clip_models import ClipItem
from kb_platform.encoder_service.front_door import EncoderFrontDoor
from kb_platform.encoder_service.runtime import EncoderRuntime
from kb_platform.encoder_service.settings import get_encoder_settings
from kb_platform.structured_logs import configure_json_logging

SETTINGS = get_encoder_settings()
# One row per input: published in the OpenAPI schema as an array of arrays of numbers (a bare
# ndarray is published as one flat array, which the rows do not match).
Vectors = Annotated[np.ndarray, Shape((-1, -1))]


@bentoml.service(
    name="kb-encoder",
    workers=1,  # one copy of each model; batching, not processes, gives throughput
    threads=8,
    traffic={"timeout": 120},
    metrics={"enabled": True},
)
class EncoderService:
    def __init__(self) -> None:
        configure_json_logging()
        self.runtime = EncoderRuntime(get_encoder_settings())
        self.runtime.start_warmup()  # /livez at once; /readyz and /healthz 503 until warm

    def __is_ready__(self) -> bool:
        return self.runtime.is_ready()

    @bentoml.api(
        route="/embed_texts",
        batchable=True,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def embed_texts(self, texts: list[str]) -> Vectors:
        """Unit-length 384-d MiniLM vectors, one row per text, in order."""
        return self.runtime.embed_texts(texts)

    @bentoml.api(
        route="/embed_clip",
        batchable=True,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def embed_clip(self, items: list[ClipItem]) -> Vectors:
        """Unit-length CLIP vectors, one row per item (a text, or an image in base64), each
        made by the checkpoint the item names."""
        return self.runtime.embed_clip(items)

    @bentoml.api(route="/model")
    def model(self) -> dict[str, object]:
        """The text model's version and dimensions and the promoted CLIP checkpoint (callers
        store the versions with the vectors)."""
        return self.runtime.model()


EncoderService.add_asgi_middleware(EncoderFrontDoor)

"""CLIP through the encoder service (a real process serving a promoted checkpoint): the vectors
of the run process's encoder, through the asset's resource as well, adaptive batching of
concurrent requests, and bad items refused before they can join another request's batch."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from kb_platform.encoder_service.client import EncoderClient, EncoderServiceError
from kb_platform.models.registry import clip_encoder
from kb_platform.resources.clip_encoder import ClipEncoderResource
from kb_platform.serving.launcher import ServiceProcess
from kb_platform.training.promotion import Promoted
from kb_platform_tests.serving.encoder_stack import LIMITS, TOKEN, at_once, metric

TEXTS = ["a flower in a garden", "a portrait of an officer", "a wing in a wind tunnel"]
PICTURES = ["flower.jpg", "hopper-XYZ.png", "transparent.png"]


@pytest.fixture(scope="module")
def images(corpus_dir: Path) -> list[bytes]:
    return [(corpus_dir / "documents/images-pillow" / name).read_bytes() for name in PICTURES]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _items(version: str, images: list[bytes], texts: list[str]) -> list[dict[str, str]]:
    return [{"clip_version": version, "kind": "image", "data": _b64(i)} for i in images] + [
        {"clip_version": version, "kind": "text", "data": t} for t in texts
    ]


@pytest.mark.numerics
def test_clip_vectors_are_the_run_process_encoder_s(
    encoder_client: EncoderClient, served_clip: Promoted, images: list[bytes]
) -> None:
    assert encoder_client.model()["clip_model"] == served_clip.version
    served = encoder_client.embed_clip(_items(served_clip.version, images, TEXTS))
    local = clip_encoder(Path(served_clip.export_dir))
    expected = np.concatenate(
        [
            local.encode_images([Image.open(io.BytesIO(i)) for i in images]),
            local.encode_texts(TEXTS),
        ]
    )
    assert served.shape == expected.shape == (6, local.spec.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-4)


@pytest.mark.numerics
def test_the_asset_resource_gives_the_same_vectors_through_the_service_as_in_process(
    encoder_service: ServiceProcess, served_clip: Promoted, images: list[bytes]
) -> None:
    remote = ClipEncoderResource(
        service_url=encoder_service.url, service_token=TOKEN, request_items=2
    )  # several requests for one document
    served_images, served_texts = remote.embed(served_clip, images, TEXTS)
    local_images, local_texts = ClipEncoderResource().embed(served_clip, images, TEXTS)
    np.testing.assert_allclose(served_images, local_images, rtol=0, atol=1e-4)
    np.testing.assert_allclose(served_texts, local_texts, rtol=0, atol=1e-4)
    empty_images, empty_texts = remote.embed(served_clip, [], [])
    assert empty_images.shape == empty_texts.shape == (0, served_images.shape[1])


def test_concurrent_clip_requests_are_encoded_in_shared_batches(
    encoder_service: ServiceProcess, encoder_client: EncoderClient, served_clip: Promoted
) -> None:
    batches_before = metric(encoder_service, "kb_encoder_clip_batch_items_count")
    requests = 12
    version = served_clip.version
    results = at_once(requests, lambda i: encoder_client.embed_clip(_items(version, [], [f"{i}"])))
    assert len(results) == requests
    batches = metric(encoder_service, "kb_encoder_clip_batch_items_count") - batches_before
    assert 1 <= batches < requests, f"{requests} concurrent requests took {batches} batches"


def _too_many_pixels() -> str:
    buffer = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buffer, format="PNG")  # 2 MP in a few kB
    return _b64(buffer.getvalue())


@pytest.mark.parametrize(
    ("item", "status", "message"),
    [
        ({"kind": "image", "data": _b64(b"%PDF-1.4 not an image")}, 400, "cannot be read"),
        ({"kind": "image", "data": "not base64!"}, 400, "not valid base64"),
        ({"kind": "image", "data": _too_many_pixels()}, 400, "the limit is 1000000"),
        ({"kind": "audio", "data": "x"}, 400, "must be"),
        ({"kind": "text", "data": "a" * 2001}, 413, "the limit is 2000"),
        ({"kind": "text", "data": "x", "clip_version": "clip-000000000000"}, 409, "neither"),
    ],
    ids=["not an image", "not base64", "too many pixels", "bad kind", "too long", "unknown"],
)
def test_bad_items_are_refused_before_they_join_a_batch(
    encoder_service: ServiceProcess, served_clip: Promoted, item: dict, status: int, message: str
) -> None:
    body = {"items": [{"clip_version": served_clip.version, **item}]}
    response = httpx.post(
        f"{encoder_service.url}/embed_clip",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_too_many_items_and_unknown_checkpoints_are_not_retried(
    encoder_client: EncoderClient, served_clip: Promoted
) -> None:
    too_many = _items(served_clip.version, [], ["x"] * (LIMITS["max_texts"] + 1))
    with pytest.raises(EncoderServiceError, match="413"):
        encoder_client.embed_clip(too_many)
    with pytest.raises(EncoderServiceError, match="409"):
        encoder_client.embed_clip(_items("clip-000000000000", [], ["x"]))

"""Multimodal /ask against the real service (`bentoml serve`) with a CLIP checkpoint, a blob store
of extracted page renders and figures, and an index holding chunks and images: image sources
with their page's text, a question sent with an image (its text read by Tesseract), typed answer
parts, and the authenticated /images endpoint with its limits."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elasticsearch import Elasticsearch
from PIL import Image

from kb_platform.config import get_settings
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Filters, Retriever
from kb_platform.models.answerers import ensure_in_store
from kb_platform.models.registry import text_encoder
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home
from kb_platform.serving.multimodal import with_page_text
from kb_platform.training.promotion import Promoted
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.multimodal_slice import (
    NOISE_DOC,
    PDF_DOC,
    PHOTO_DOC,
    PHOTOTEST,
    Slice,
    index_multimodal_slice,
)

pytestmark = [pytest.mark.services, pytest.mark.numerics]

ANSWERER = (
    "smollm2-135m-instruct"  # the smallest packaged chat model: these tests are about context
)
MAX_RESPONSE_BYTES = 1_000_000  # the noise picture (~3.6 MB) is over it, the real images under


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> LocalBlobStore:
    return LocalBlobStore(base_dir=str(tmp_path_factory.mktemp("blobs")))


@pytest.fixture(scope="module")
def indexed(
    es: Elasticsearch, corpus_dir: Path, blobs: LocalBlobStore, served_clip: Promoted
) -> Iterator[tuple[IndexNames, Slice]]:
    names = IndexNames(f"multimodal-test-{uuid.uuid4().hex[:8]}")
    made = index_multimodal_slice(es, names, corpus_dir, blobs, Path(served_clip.export_dir))
    blobs.put("images/ghost/page-0001.png", blobs.get(next(iter(made.images.values()))))
    yield names, made
    delete_family(es, names)


@pytest.fixture(scope="module")
def key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def service(
    indexed: tuple[IndexNames, Slice],
    blobs: LocalBlobStore,
    served_clip: Promoted,
    key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    ensure_in_store(ANSWERER)
    work = tmp_path_factory.mktemp("multimodal-service")
    (work / "keys.json").write_text(
        json.dumps([{"sha256": hash_key(key), "name": "tests", "rate_per_s": 500, "burst": 500}])
    )
    service = ServiceProcess(
        port=free_port(0),
        env={
            "KB_ELASTICSEARCH_URL": get_settings().elasticsearch_url,
            "KB_ELASTICSEARCH_INDEX_BASE": indexed[0].base,
            "KB_SERVING_API_KEYS_FILE": str(work / "keys.json"),
            "KB_SERVING_ANSWERER": ANSWERER,
            "KB_SERVING_CLIP_EXPORT_DIR": served_clip.export_dir,
            "KB_SERVING_BLOB_DIR": blobs.base_dir,
            "KB_SERVING_MAX_IMAGE_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES),
            "KB_SERVING_ASK_IMAGE_SOURCES": "2",
            "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
        },
        log_path=work / "service.log",
    )
    with service.running(timeout=240):
        yield service


@pytest.fixture(scope="module")
def client(service: ServiceProcess, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=90
    ) as http:
        yield http


def _check_parts(body: dict) -> None:
    """The typed parts say the answer: its text in order, each image after the text citing it."""
    parts = body["parts"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert " ".join(texts).split() == body["answer"].split()
    cited = {c["number"]: c for c in body["citations"]}
    seen: set[int] = set()
    for n, part in enumerate(parts):
        if part["type"] == "image":
            citation = cited[part["number"]]
            assert citation["kind"] == "image" and part["url"] == citation["image_url"]
            assert parts[n - 1]["type"] == "image" or part["number"] in parts[n - 1]["citations"]
            seen.add(part["number"])
    assert seen == {c["number"] for c in body["citations"] if c["kind"] == "image"}


def test_a_text_question_gets_image_sources_with_servable_urls(
    client: httpx.Client, blobs: LocalBlobStore
) -> None:
    response = client.post("/ask", json={"question": "lorem ipsum dolor sit amet", "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    images = [s for s in body["sources"] if s["kind"] == "image"]
    assert 1 <= len(images) <= 2, body["sources"]  # KB_SERVING_ASK_IMAGE_SOURCES
    assert any(s["kind"] == "text" for s in body["sources"])
    for source in images:
        assert source["image_url"] == "/" + source["image_key"]
        if source["doc_id"] == NOISE_DOC:  # over the response limit: see the test below
            continue
        served = client.get(source["image_url"])
        assert served.status_code == 200, served.text
        assert served.headers["content-type"] == "image/png"
        assert served.content == blobs.get(source["image_key"])
    _check_parts(body)


def test_image_sources_reach_the_model_with_their_pages_text(
    indexed: tuple[IndexNames, Slice], es: Elasticsearch, served_clip: Promoted
) -> None:
    from kb_platform.models.registry import clip_encoder

    names, made = indexed
    encoder = text_encoder()
    retriever = Retriever(
        es,
        lambda q: encoder.encode([q])[0],
        index=names.read_alias,
        clip=clip_encoder(Path(served_clip.export_dir)),
    )
    figure = f"{PDF_DOC}:image:page-0001-img-00"
    hits = retriever.clip_vector(
        retriever.clip.encode_texts(["x"])[0], "image", k=len(made.images), filters=Filters()
    )
    enriched = {h.chunk_id: h for h in with_page_text(es, names.read_alias, hits)}
    assert "Lorem ipsum dolor sit amet" in enriched[figure].source["page_text"]
    assert "page_text" not in enriched[f"{NOISE_DOC}:image:page-0001"].source  # no text there


def _tiff_upload(corpus_dir: Path) -> dict:
    return {"image": ("phototest.tif", (corpus_dir / PHOTOTEST).read_bytes(), "image/tiff")}


def test_a_question_with_an_image_gets_its_text_and_the_images_like_it(
    client: httpx.Client, corpus_dir: Path
) -> None:
    response = client.post(
        "/ask",
        files={**_tiff_upload(corpus_dir), "question": (None, "what does the text say?")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    read = body["question_image"]
    assert (read["width"], read["height"]) == Image.open(corpus_dir / PHOTOTEST).size
    assert "quick brown dog" in read["ocr_text"]  # Tesseract read the picture sent
    by_id = {s["chunk_id"]: s for s in body["sources"]}
    # The indexed copy of the same picture is the nearest image by CLIP, whatever its training.
    assert by_id[f"{PHOTO_DOC}:image:page-0001"]["kind"] == "image"
    assert body["refused"] is False  # the text read from the image matches its sources
    _check_parts(body)


def test_images_need_a_key_and_only_indexed_images_are_served(
    client: httpx.Client, service: ServiceProcess
) -> None:
    url = f"/images/{PDF_DOC}/page-0001.png"
    assert httpx.get(service.url + url).status_code == 401
    assert client.get(url).status_code == 200
    for missing in (
        "/images/ghost/page-0001.png",  # stored, but not in the index
        f"/images/{PDF_DOC}/page-0009.png",
        f"/images/{PDF_DOC}/a/page-0001.png",
        "/images/raw/pdf-lorem",
        f"/images/{PDF_DOC}/..%2F..%2Fraw%2F{PDF_DOC}.png",
    ):
        response = client.get(missing)
        assert response.status_code == 404, (missing, response.text)
        assert response.json()["code"] == "image_not_found"


def test_images_over_the_size_limit_are_refused_unless_a_smaller_copy_is_asked_for(
    client: httpx.Client,
) -> None:
    url = f"/images/{NOISE_DOC}/page-0001.png"
    big = client.get(url)
    assert big.status_code == 413 and "max_side" in big.json()["error"]
    small = client.get(url, params={"max_side": 200})
    assert small.status_code == 200 and len(small.content) < MAX_RESPONSE_BYTES
    assert max(Image.open(io.BytesIO(small.content)).size) == 200
    assert client.get(url, params={"max_side": 5}).status_code == 400
    assert client.get(url, params={"max_side": "big"}).status_code == 400


def test_the_stream_sends_image_sources_first(client: httpx.Client) -> None:
    with client.stream(
        "POST", "/ask/stream", json={"question": "lorem ipsum dolor sit amet"}
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert events[0] == "sources" and events[-1] == "answer"
    sources = json.loads(lines[1].removeprefix("data: "))
    assert any(s["kind"] == "image" and s["image_url"] for s in sources)
    final = json.loads(lines[-1].removeprefix("data: "))
    _check_parts(final)

"""The encoder service as a real process (`bentoml serve bentos/encoder`), with the real MiniLM:
probes that follow the warm-up, the internal token, request limits, the same vectors as in the
run process, adaptive batching of concurrent requests, metrics, a run's request id in the
service's log lines, and a Dagster step that heals when the service is stopped and started
under it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from dagster import DagsterInstance, FilesystemIOManager, asset, materialize

from kb_platform.contracts import Chunk, Modality
from kb_platform.defs.embeddings import text_embeddings
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.encoder_service.client import EncoderClient
from kb_platform.errors import ServiceUnavailable
from kb_platform.index.analysis import embedding_input
from kb_platform.index.documents import vectors_of
from kb_platform.models.registry import text_encoder
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.text_encoder import TextEncoderResource
from kb_platform.serving.launcher import (
    ServiceProcess,
    probe,
)
from kb_platform.structured_logs import REQUEST_ID_TAG
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.encoder_stack import TOKEN, at_once, metric

TEXTS = [
    "The laminar boundary layer separates under an adverse pressure gradient.",
    "Heat transfer to a blunt body in hypersonic flow depends on the nose radius.",
    "Flutter of swept wings at transonic speeds.",
]


@pytest.fixture
def service(encoder_service: ServiceProcess) -> ServiceProcess:
    return encoder_service


@pytest.fixture
def client(encoder_client: EncoderClient) -> EncoderClient:
    return encoder_client


def test_probes_follow_the_warm_up(service: ServiceProcess) -> None:
    statuses = [status for _, status in service.readiness]
    assert statuses[-1] == 200
    assert 503 in statuses, f"readiness never said 'not ready' while warming: {statuses}"
    assert 200 not in statuses[: statuses.index(503)]
    assert probe(f"{service.url}/livez") == 200
    assert probe(f"{service.url}/healthz") == 200  # the startup probe: models loaded


@pytest.mark.numerics
def test_vectors_are_the_run_process_encoder_s(client: EncoderClient) -> None:
    model = client.model()
    assert (model["text_model"], model["dimensions"]) == ("minilm-l6-v2", 384)
    served = client.embed_texts(TEXTS)
    assert served.shape == (3, 384) and served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)
    # The same model code in both places; batches may differ in padding, so up to rounding.
    np.testing.assert_allclose(served, text_encoder().encode(TEXTS), rtol=0, atol=1e-5)


def test_concurrent_requests_are_encoded_in_shared_batches(
    service: ServiceProcess, client: EncoderClient
) -> None:
    batches_before = metric(service, "kb_encoder_batch_texts_count")
    texts_before = metric(service, "kb_encoder_texts_total")
    requests = 24
    results = at_once(requests, lambda i: client.embed_texts([f"{TEXTS[i % 3]} ({i})"]))
    assert len(results) == requests and all(v.shape == (1, 384) for v in results.values())
    batches = metric(service, "kb_encoder_batch_texts_count") - batches_before
    assert metric(service, "kb_encoder_texts_total") - texts_before == requests
    assert 1 <= batches < requests, f"{requests} concurrent requests took {batches} batches"


def test_every_route_but_the_probes_needs_the_token(service: ServiceProcess) -> None:
    body = {"texts": ["lift"]}
    assert httpx.post(f"{service.url}/embed_texts", json=body).status_code == 401
    wrong = httpx.post(
        f"{service.url}/embed_texts", json=body, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and "token" in wrong.json()["error"]
    assert httpx.get(f"{service.url}/metrics").status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"texts": ["lift", ', 400, "not JSON"),
        (b'{"texts": "lift"}', 400, "must be"),
        (b'{"texts": []}', 400, "empty"),
        (b'{"texts": [' + b", ".join([b'"x"'] * 17) + b"]}", 413, "the limit is 16"),
        (b'{"texts": ["' + b"a" * 2001 + b'"]}', 413, "the limit is 2000"),
        (b'{"texts": ["' + b"a " * 600_000 + b'"]}', 413, "exceeds"),
    ],
    ids=["malformed", "not a list", "empty", "too many", "too long", "too big"],
)
def test_bad_requests_are_refused_before_they_join_a_batch(
    service: ServiceProcess, body: bytes, status: int, message: str
) -> None:
    response = httpx.post(
        f"{service.url}/embed_texts",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_metrics_cover_warm_up_model_load_and_readiness(service: ServiceProcess) -> None:
    assert metric(service, "kb_encoder_ready") == 1
    assert metric(service, "kb_encoder_model_load_seconds") > 0
    assert metric(service, "kb_encoder_warmup_seconds") > 0
    assert metric(service, "kb_encoder_refused_requests_total") > 0


def test_nothing_listening_is_a_retryable_outage() -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        EncoderClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=2).embed_texts(["x"])
    assert raised.value.retryable


DOC_ID = "0123456789abcdef"


@asset(key="text_chunks", partitions_def=documents_partitions)
def stored_chunks() -> list[Chunk]:
    return [
        Chunk(f"{DOC_ID}:{i}", DOC_ID, text, 12, "test://chunks", "t", Modality.TEXT, page=1)
        for i, text in enumerate(TEXTS)
    ]


def _materialize_embeddings(
    service: ServiceProcess, tmp_path: Path, tags: dict[str, str] | None = None
):  # type: ignore[no-untyped-def]
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(documents_partitions.name, [DOC_ID])
        return materialize(
            [stored_chunks, text_embeddings],
            partition_key=DOC_ID,
            instance=instance,
            tags=tags,
            resources={
                "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "assets")),
                "parquet_io_manager": ParquetIOManager(base_uri=str(tmp_path / "tables")),
                "text_encoder": TextEncoderResource(service_url=service.url, service_token=TOKEN),
            },
        )


def _logged(service: ServiceProcess, request_id: str) -> list[dict]:
    return [
        json.loads(line)
        for line in service.log_path.read_text(errors="replace").splitlines()
        if line.startswith("{") and request_id in line
    ]


def test_a_run_s_request_id_is_on_the_service_s_log_lines(
    service: ServiceProcess, tmp_path: Path
) -> None:
    request_id = f"kb.ingest.text:0:{uuid.uuid4().int % 10**6}"
    result = _materialize_embeddings(service, tmp_path, {REQUEST_ID_TAG: request_id})
    assert result.success
    time.sleep(0.5)
    access = [e for e in _logged(service, request_id) if e["logger"].endswith(".access")]
    assert {e["path"] for e in access} == {"/model", "/embed_texts"}
    assert all(e["request_id"] == request_id and e["status"] == 200 for e in access)

    # A caller's id that could forge a log line is replaced by one of the service's own.
    hostile = 'x" , "level": "error'
    response = httpx.post(
        f"{service.url}/model",
        json={},
        headers={"Authorization": f"Bearer {TOKEN}", "X-Request-Id": hostile},
    )
    own = response.headers["x-request-id"]
    assert response.status_code == 200 and own != hostile and len(own) == 32
    time.sleep(0.5)
    assert [e["status"] for e in _logged(service, own)] == [200]


def test_a_step_heals_when_the_service_is_stopped_and_started_under_it(
    service: ServiceProcess, tmp_path: Path
) -> None:
    service.stop()
    assert probe(f"{service.url}/livez") == 0

    def restart() -> None:
        time.sleep(3)  # the step's first attempts find nothing listening, then a warming service
        service.start()

    restarting = threading.Thread(target=restart)
    restarting.start()
    result = _materialize_embeddings(service, tmp_path)
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    restarting.join()
    assert result.success
    assert retries, "the step should have met the outage and retried"
    errors = [e.event_specific_data.error.to_string() for e in retries]
    assert all("ServiceUnavailable" in error for error in errors), errors
    table = result.output_for_node("text_embeddings")
    expected = text_encoder().encode([embedding_input("t", text) for text in TEXTS])
    np.testing.assert_allclose(vectors_of(table), expected, rtol=0, atol=1e-5)
    service.wait_ready(timeout=240)  # warm again for whoever comes next

"""Hostile callers against the RAG service as a real process (`bentoml serve`, the real models, a
slice of Cranfield plus one document that carries prompt-injection text, on the shared
Elasticsearch): Schemathesis requests generated from the service's own OpenAPI schema (valid and
invalid, derandomized so CI sends the same few hundred each run), malformed multipart bodies,
header abuse and slow clients. No 5xx, every error a JSON body that says what was wrong, the
documented response schemas kept, and the service answering throughout."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from elasticsearch import Elasticsearch
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from kb_platform.index.analysis import embedding_input
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.index.writer import bulk_with_retries, index_actions
from kb_platform.models.answerers import DEFAULT_ANSWERER, ensure_in_store
from kb_platform.models.registry import text_encoder
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.control_tokens import control_tokens_in
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home
from kb_platform.training.promotion import Promoted
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.corpus_slice import index_slice
from kb_platform_tests.serving.encoder_stack import TOKEN
from kb_platform_tests.serving.test_prompt_injection import INJECTED

pytestmark = pytest.mark.services

SLICE_DOCS = 30
INJECTED_DOC = "injected-1"
QUESTION = "what is the effect of slipstream on the lift of a wing?"
# (path, examples per generation mode): /ask generates, so it gets fewer
BUDGET = {"/search": 150, "/ask": 40, "/ask/stream": 40}
ENCODER_BUDGET = {"/embed_texts": 60, "/embed_clip": 40}


@pytest.fixture(scope="module")
def index_base(es: Elasticsearch, corpus_dir: Path) -> Iterator[str]:
    names = IndexNames(f"fuzz-test-{uuid.uuid4().hex[:8]}")
    index_slice(es, names, corpus_dir / "retrieval" / "cranfield", SLICE_DOCS)
    title = "slipstream and wing lift"
    chunk = {
        "chunk_id": f"{INJECTED_DOC}-0",
        "doc_id": INJECTED_DOC,
        "modality": "text",
        "text": INJECTED,
        "title": title,
        "source_uri": "tests:injected",
        "page": 1,
        "char_start": 0,
        "char_end": len(INJECTED),
        "text_vector": text_encoder().encode([embedding_input(title, INJECTED)])[0].tolist(),
    }
    report = bulk_with_retries(es, index_actions(names.write_alias, [chunk]))
    assert report.ok, report.failed
    es.indices.refresh(index=names.write_alias)
    yield names.base
    delete_family(es, names)


@pytest.fixture(scope="module")
def key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def service(
    index_base: str,
    key: str,
    es: Elasticsearch,
    served_clip: Promoted,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """The whole service: text and image search (an untrained CLIP checkpoint) and answers."""
    ensure_in_store(DEFAULT_ANSWERER)
    work = tmp_path_factory.mktemp("fuzzed-service")
    entry = {"sha256": hash_key(key), "name": "fuzz", "rate_per_s": 10000, "burst": 10000}
    (work / "keys.json").write_text(json.dumps([entry]))
    service = ServiceProcess(
        port=free_port(),
        env={
            "KB_ELASTICSEARCH_INDEX_BASE": index_base,
            "KB_SERVING_API_KEYS_FILE": str(work / "keys.json"),
            "KB_SERVING_MAX_NEW_TOKENS": "8",
            "KB_SERVING_MAX_NEW_TOKENS_CAP": "16",
            "KB_SERVING_MAX_REQUEST_BYTES": str(256 * 1024),
            "KB_SERVING_CLIP_EXPORT_DIR": served_clip.export_dir,
            "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
        },
        log_path=work / "service.log",
    )
    with service.running(timeout=240):
        yield service


@pytest.fixture(scope="module")
def client(service: ServiceProcess, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        yield http


def _header(response: Any, name: str) -> str:
    value = response.headers.get(name, [""])
    return value[0] if isinstance(value, list) else value


def errors_say_what_was_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    """A refused request gets a JSON body whose ``error`` says why."""
    if response.status_code < 400:
        return None
    content_type = _header(response, "content-type")
    assert content_type.startswith("application/json"), (response.status_code, content_type)
    body = json.loads(response.content)
    assert isinstance(body.get("error"), str) and body["error"].strip(), body
    return True


def errors_carry_the_request_id(ctx: Any, response: Any, case: Any) -> bool | None:
    """The RAG service's refusals repeat the request's id (X-Request-ID) in the body."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    assert body.get("request_id") == _header(response, "x-request-id"), body
    return True


def fuzz(
    url: str,
    headers: dict[str, str],
    path: str,
    mode: GenerationMode,
    examples: int,
    checks: tuple[Any, ...] = (),
    expect_answers: bool = True,
) -> dict[int, int]:
    """``examples`` requests to ``path`` generated from the schema the service at ``url``
    serves; each response checked. The count of each status."""
    schema = schemathesis.openapi.from_url(f"{url}/docs.json", headers=headers, timeout=30)
    operation = schema[path]["POST"]
    statuses: dict[int, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same requests on every run and CPU
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                response_schema_conformance,
                errors_say_what_was_wrong,
                *checks,
            ],
        )

    run()
    assert sum(statuses.values()) >= examples // 2, statuses
    if mode is GenerationMode.POSITIVE and expect_answers:
        assert statuses.get(200, 0) > 0, f"no generated request was answered: {statuses}"
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # still there, ready
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", list(BUDGET))
def test_generated_requests_get_no_5xx_and_errors_say_why(
    service: ServiceProcess, key: str, path: str, mode: GenerationMode
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    fuzz(service.url, auth, path, mode, BUDGET[path], checks=(errors_carry_the_request_id,))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", list(ENCODER_BUDGET))
def test_the_encoder_service_gets_no_5xx_from_generated_requests(
    encoder_service: ServiceProcess, path: str, mode: GenerationMode
) -> None:
    token = {"Authorization": f"Bearer {TOKEN}"}
    # a generated /embed_clip item names a checkpoint the service does not serve (409), so
    # only /embed_texts is expected to answer some of them
    answers = path == "/embed_texts"
    fuzz(encoder_service.url, token, path, mode, ENCODER_BUDGET[path], expect_answers=answers)


def test_a_document_with_injected_instructions_is_only_quoted(client: httpx.Client) -> None:
    response = client.post(
        "/ask",
        json={"question": QUESTION, "k": 2, "filters": {"doc_id": [INJECTED_DOC, "cran-1"]}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    given = [source["doc_id"] for source in body["sources"]]
    assert INJECTED_DOC in given, given  # quoted as a source, as any document is
    numbers = {source["number"] for source in body["sources"]}
    assert {c["number"] for c in body["citations"]} <= numbers, body
    assert control_tokens_in(body["answer"]) == []
    assert set(body) == set(client.post("/ask", json={"question": QUESTION}).json())


MALFORMED = [
    ("no boundary", "multipart/form-data", b"--x\r\nContent-Disposition: form-data\r\n\r\na"),
    (
        "truncated",
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="query"\r\n\r\nlift',
    ),
    ("no parts", "multipart/form-data; boundary=x", b"--x--\r\n"),
    ("garbage", "multipart/form-data; boundary=x", bytes(range(256)) * 8),
    ("header only", "multipart/form-data; boundary=x", b"--x\r\n" + b"A" * 70000),
    ("json as form", "multipart/form-data; boundary=x", b'{"query": "lift"}'),
    ("form as json", "application/json", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
    ("bad utf-8 json", "application/json", b'{"query": "\xff\xfe lift"}'),
    ("deep json", "application/json", b'{"query": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("unknown type", "application/x-kb-nonsense", b"query=lift"),
]


@pytest.mark.parametrize(("name", "content_type", "body"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_are_refused_with_a_reason(
    client: httpx.Client, name: str, content_type: str, body: bytes
) -> None:
    response = client.post("/search", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    assert response.json()["error"], (name, response.text)


def test_header_abuse_is_refused_or_ignored(client: httpx.Client, key: str) -> None:
    search = {"query": "lift", "k": 1}
    # a request id that is not ours to echo is replaced, not reflected
    hostile_id = "<script>alert(1)</script>" + "a" * 100
    response = client.post("/search", json=search, headers={"x-request-id": hostile_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] != hostile_id
    # a huge header, many headers, a malformed and a doubled Authorization
    huge = client.post("/search", json=search, headers={"x-filler": "a" * 60_000})
    assert huge.status_code in (200, 400, 431), huge.status_code
    many = client.post("/search", json=search, headers={f"x-h{i}": "v" for i in range(500)})
    assert many.status_code in (200, 400, 431), many.status_code
    for auth in ("Bearer", "Bearer " + "k" * 10_000, "Basic Zm9vOmJhcg==", f"Bearer {key} {key}"):
        bad = httpx.post(
            f"{client.base_url}/search", json=search, headers={"authorization": auth}, timeout=30
        )
        assert bad.status_code == 401, (auth[:20], bad.status_code)
        assert bad.json()["error"]
    # bytes no HTTP client would send: a NUL in the key, a header name that is not a token
    port = int(str(client.base_url).rsplit(":", 1)[1])
    for header in (f"Authorization: Bearer {key}\x00".encode(), b"X Bad Name: 1"):
        assert _raw_status(port, header) in (400, 401), header
    assert client.post("/search", json=search).status_code == 200


def _raw_status(port: int, header: bytes) -> int:
    """The status of a /search request sent as raw bytes with ``header`` in it."""
    body = b'{"query": "lift"}'
    request = (
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + header
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        reply = conn.recv(4096)
    return int(reply.split(b" ", 2)[1])


def test_slow_clients_do_not_starve_the_others(
    service: ServiceProcess, client: httpx.Client
) -> None:
    """Slowloris, bounded: 200 connections that send a header a byte at a time; requests from
    others are answered meanwhile (the event loop holds the sockets, no thread waits on them)."""
    host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
    slow: list[socket.socket] = []
    try:
        for _ in range(200):
            conn = socket.create_connection((host, port), timeout=5)
            conn.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(conn)
        latencies = []
        for second in range(5):
            for conn in slow:
                # the server may drop a slow client: that is allowed too
                with contextlib.suppress(OSError):
                    conn.sendall(b"a")
            started = time.perf_counter()
            response = client.post("/search", json={"query": f"wing lift {second}", "k": 3})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(1)
        assert max(latencies) < 5, latencies
    finally:
        for conn in slow:
            conn.close()
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200

"""The BentoML RAG service as a real process (`bentoml serve`), on a second Elasticsearch node of
its own holding an indexed slice of Cranfield, with the real models: readiness, search in each
mode, cited answers and their fallback, keys, rate limits, bad input, metrics, logs, and an
Elasticsearch restart under it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch
from PIL import Image

from kb_platform import cli
from kb_platform.config import REPO_ROOT, get_settings
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.models.answerers import DEFAULT_ANSWERER, ensure_in_store
from kb_platform.serving import sse
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home, probe
from kb_platform.serving.prompt import REFUSAL, strip_unknown_citations
from kb_platform.serving.schemas import AskResponse
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.corpus_slice import index_slice

pytestmark = pytest.mark.services

SLICE_DOCS = 200  # Cranfield abstracts 1..200 (~300 chunks)
# Cranfield queries (number, text) whose judged-relevant document leads every mode on the slice.
KNOWN = [
    ("papers on shock-sound wave interaction .", "cran-64"),
    (
        "have the effects of an elastic edge restraint been considered in previous papers on "
        "panel flutter .",
        "cran-15",
    ),
    (
        "are the stable profiles of a compressible boundary layer induced by a moving wave known .",
        "cran-71",
    ),
]
QUESTION = "what is the effect of slipstream on the lift of a wing?"
OFF_TOPIC = "what is the recommended dose of aspirin for a headache in children?"
ANSWER_DOC = "cran-1"
ANSWER_TEXT = "spanwise distribution of the lift increase due to slipstream"
ES_SCRIPT = REPO_ROOT / "deploy" / "local" / "elasticsearch" / "elasticsearch.sh"


class SecondNode:
    """An Elasticsearch node of this module's own (its own port, data and logs), so stopping it
    disturbs nobody else's tests."""

    def __init__(self, root: Path):
        self.http_port = free_port(9201)
        self.env = {
            **os.environ,
            "KB_ES_PORT": str(self.http_port),
            "KB_ES_TRANSPORT_PORT": str(free_port(9301)),
            "KB_LOCAL_DIR": str(root),
            "KB_ES_HEAP": "512m",
        }
        self.url = f"http://127.0.0.1:{self.http_port}"

    def run(self, action: str) -> None:
        result = subprocess.run(
            ["bash", str(ES_SCRIPT), action], env=self.env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"elasticsearch.sh {action} failed:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondNode]:
    node = SecondNode(tmp_path_factory.mktemp("es-node"))
    node.run("up")
    yield node
    node.run("down")


@pytest.fixture(scope="module")
def index_base(node: SecondNode, corpus_dir: Path) -> Iterator[str]:
    names = IndexNames(f"serving-test-{uuid.uuid4().hex[:8]}")
    es = Elasticsearch(node.url, request_timeout=60)
    index_slice(es, names, corpus_dir / "retrieval" / "cranfield", SLICE_DOCS)
    yield names.base
    try:
        delete_family(Elasticsearch(node.url, request_timeout=30), names)
    finally:
        es.close()


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"main": new_key(), "limited": new_key()}


@pytest.fixture(scope="module")
def service(
    node: SecondNode,
    index_base: str,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    ensure_in_store(DEFAULT_ANSWERER)  # once per machine: the GGUF parts joined into the store
    work = tmp_path_factory.mktemp("service")
    keys_file = work / "keys.json"
    keys_file.write_text(
        json.dumps(
            [
                {
                    "sha256": hash_key(keys["main"]),
                    "name": "tests",
                    "rate_per_s": 1000,
                    "burst": 1000,
                },
                {
                    "sha256": hash_key(keys["limited"]),
                    "name": "limited",
                    "rate_per_s": 0.2,
                    "burst": 2,
                },
            ]
        )
    )
    service = ServiceProcess(
        port=free_port(0),
        env={
            "KB_ELASTICSEARCH_URL": node.url,
            "KB_ELASTICSEARCH_INDEX_BASE": index_base,
            "KB_SERVING_API_KEYS_FILE": str(keys_file),
            "KB_SERVING_MAX_REQUEST_BYTES": str(2 * 1024 * 1024),
            "KB_SERVING_MAX_IMAGE_PIXELS": str(1_000_000),
            "KB_SERVING_ASK_CONCURRENCY": "1",
            "KB_SERVING_CLIP_EXPORT_DIR": str(work / "no-clip-checkpoint"),
            "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
        },
        log_path=work / "service.log",
    )
    with service.running(timeout=240):
        yield service


@pytest.fixture(scope="module")
def client(service: ServiceProcess, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {keys['main']}"}, timeout=60
    ) as http:
        yield http


@pytest.mark.numerics
def test_not_ready_until_warm_then_ready(service: ServiceProcess) -> None:
    statuses = [status for _, status in service.readiness]
    assert statuses[-1] == 200
    assert 503 in statuses, f"readiness never said 'not ready' while warming: {statuses}"
    first_503 = statuses.index(503)
    assert 200 not in statuses[:first_503]
    assert probe(f"{service.url}/livez") == 200


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["bm25", "knn", "hybrid"])
def test_search_finds_the_judged_document_in_each_mode(client: httpx.Client, mode: str) -> None:
    for query, expected in KNOWN:
        response = client.post("/search", json={"query": query, "k": 5, "mode": mode})
        assert response.status_code == 200, response.text
        body = response.json()
        docs = [hit["doc_id"] for hit in body["hits"]]
        assert expected in docs[:3], (mode, query, docs)
        hit = body["hits"][0]
        assert hit["text"] and hit["kind"] == "text" and hit["page"] == 1
        assert hit["provenance"]["source_uri"].startswith("cranfield:")
        assert mode in hit["provenance"]["ranks"] or mode == "hybrid"
        assert response.headers["x-request-id"] == body["request_id"]


@pytest.mark.numerics
def test_search_filters_and_multipart_form(client: httpx.Client) -> None:
    response = client.post(
        "/search", json={"query": "boundary layer", "k": 10, "filters": {"doc_id": ["cran-3"]}}
    )
    assert response.status_code == 200
    assert {hit["doc_id"] for hit in response.json()["hits"]} == {"cran-3"}
    # the same fields as multipart form parts (how a request with an image is sent)
    form = client.post(
        "/search",
        files={
            "query": (None, "shock-sound wave interaction"),
            "k": (None, "3"),
            "mode": (None, "bm25"),
            "filters": (None, json.dumps({"modality": ["text"]})),
        },
    )
    assert form.status_code == 200, form.text
    assert form.json()["hits"][0]["doc_id"] == "cran-64"


@pytest.mark.numerics
def test_ask_answers_citing_given_sources_retrieved_with_the_answer(client: httpx.Client) -> None:
    response = client.post("/ask", json={"question": QUESTION})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["extractive"] is False and body["refused"] is False, body
    assert body["finish_reason"] in ("stop", "length")
    assert body["tokens_generated"] > 0 and "llama.cpp" in body["generator"]
    assert body["answer"].startswith("According to [")  # the reply is begun for the model
    assert 0 < body["first_token_ms"] <= body["generation_ms"]
    # Which sources the model cites, and its words, depend on near-tied logits that differ with
    # the kernels a CPU picks. What holds on any CPU: it cites, every citation is one of the
    # given sources under the number the answer uses, no number that was not given appears,
    # and retrieval (deterministic) gave it the chunk with the answer.
    sources = {s["number"]: s for s in body["sources"]}
    assert sorted(sources) == [1, 2, 3, 4]  # k defaults to 4
    assert body["citations"], body
    for citation in body["citations"]:
        assert citation == sources[citation["number"]]
        assert f"[{citation['number']}]" in body["answer"]
    assert set(re.findall(r"\[(\d+)\]", body["answer"])) <= {"1", "2", "3", "4"}
    with_answer = [s for s in body["sources"] if s["doc_id"] == ANSWER_DOC]
    assert with_answer, body["sources"]
    chunk = _chunk_text(client, with_answer[0]["chunk_id"], ANSWER_DOC)
    assert ANSWER_TEXT in chunk
    assert with_answer[0]["snippet"] in " ".join(chunk.split())


@pytest.mark.numerics
def test_ask_refuses_when_the_sources_do_not_hold_the_answer(client: httpx.Client) -> None:
    response = client.post("/ask", json={"question": OFF_TOPIC})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refused"] is True and body["extractive"] is False, body
    assert body["answer"] == REFUSAL and body["citations"] == []
    assert "best similarity" in body["fallback_reason"] and body["tokens_generated"] == 0
    assert len(body["sources"]) == 4  # what it was given, for the reader to check


@pytest.mark.numerics
def test_ask_with_an_image_but_no_clip_still_reads_its_text(
    client: httpx.Client, corpus_dir: Path
) -> None:
    picture = corpus_dir / "ocr" / "tesseract" / "phototest.tif"
    response = client.post(
        "/ask",
        files={
            "question": (None, "what does the text in this picture say?"),
            "image": ("phototest.tif", picture.read_bytes(), "image/tiff"),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "quick brown dog" in body["question_image"]["ocr_text"]
    assert {s["kind"] for s in body["sources"]} == {"text"}  # no CLIP: text sources only
    assert [p["type"] for p in body["parts"]] and body["parts"][0]["type"] == "text"


@pytest.mark.numerics
def test_ask_stream_sends_the_sources_then_tokens_then_the_cited_answer(
    client: httpx.Client,
) -> None:
    arrivals: list[tuple[float, str, Any]] = []
    started = time.perf_counter()
    with client.stream("POST", "/ask/stream", json={"question": QUESTION}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        block: list[str] = []
        for line in response.iter_lines():
            if line:
                block.append(line)
                continue
            for name, data in sse.parse(block):
                arrivals.append((time.perf_counter() - started, name, data))
            block = []
    names = [name for _, name, _ in arrivals]
    assert names[0] == "sources" and names[-1] == "answer", names
    assert names.count("token") >= 2 and set(names) == {"sources", "token", "answer"}
    final = AskResponse.model_validate(arrivals[-1][2])
    assert final.request_id == request_id and not final.extractive and final.citations
    assert [c.model_dump() for c in final.sources] == arrivals[0][2]
    streamed = "".join(data["text"] for _, name, data in arrivals if name == "token")
    assert strip_unknown_citations(streamed, len(final.sources)) == final.answer
    first_token_at = next(at for at, name, _ in arrivals if name == "token")
    assert first_token_at < arrivals[-1][0]  # the first words came before the whole answer
    assert final.first_token_ms is not None and final.first_token_ms < final.generation_ms


def test_ask_stream_refuses_before_streaming_when_the_request_is_bad(
    client: httpx.Client,
) -> None:
    # The previous test's stream may hold the one /ask slot for a moment after its last byte
    # (until its handler returns): a refused request says so and is retried, as clients do.
    for _ in range(20):
        response = client.post("/ask/stream", json={"question": ""})
        if response.status_code != 503 or response.json()["code"] != "overloaded":
            break
        time.sleep(0.1)
    assert response.status_code == 400, response.text
    assert not response.headers["content-type"].startswith("text/event-stream")


@pytest.mark.numerics
def _ask_command(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], question: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli.main, ["ask", question])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_the_ask_command_prints_search_hits_and_a_cited_answer(
    service: ServiceProcess, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(keys["main"] + "\n")
    env = {"KB_RAG_URL": service.url, "KB_RAG_API_KEY_FILE": str(key_file)}
    result = _ask_command(monkeypatch, env, QUESTION)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("/search (hybrid,")
    assert sum(line.startswith(("  1. ", "  2. ", "  3. ", "  4. ")) for line in lines) == 4
    ask_at = next(i for i, line in enumerate(lines) if line.startswith("/ask ("))
    assert lines[ask_at + 1].strip() and "[" in lines[ask_at + 1]
    assert any(line.startswith("  [") for line in lines[ask_at + 2 :]), result.output


def test_the_ask_command_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _ask_command(monkeypatch, {"KB_RAG_API_KEY_FILE": str(tmp_path / "absent")}, "a")
    assert result.exit_code == 1
    assert "services up rag" in result.output


@pytest.mark.numerics
def test_ask_falls_back_to_an_extractive_answer_when_generation_times_out(
    client: httpx.Client,
) -> None:
    response = client.post("/ask", json={"question": QUESTION, "timeout_s": 0.001})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["extractive"] is True and body["finish_reason"] == "timeout"
    assert "time budget" in body["fallback_reason"]
    assert body["citations"] and all(
        f"[{c['number']}]" in body["answer"] for c in body["citations"]
    )
    assert any(ANSWER_TEXT in c["snippet"] for c in body["citations"]), body


def test_ask_beyond_its_concurrency_limit_is_refused_with_retry_after(
    client: httpx.Client,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/ask", json={"question": QUESTION})
        time.sleep(0.3)  # the first one holds the only /ask slot while it generates
        second = pool.submit(client.post, "/ask", json={"question": QUESTION})
        statuses = sorted([first.result().status_code, second.result().status_code])
        refused = second.result() if second.result().status_code == 503 else first.result()
    assert statuses == [200, 503]
    assert refused.headers["retry-after"] == "1"
    assert "concurrency limit" in refused.json()["error"]


def _chunk_text(client: httpx.Client, chunk_id: str, doc_id: str) -> str:
    hits = client.post(
        "/search", json={"query": "slipstream", "k": 10, "filters": {"doc_id": [doc_id]}}
    ).json()["hits"]
    return next(hit["text"] for hit in hits if hit["chunk_id"] == chunk_id)


def test_every_endpoint_but_the_probes_needs_a_key(service: ServiceProcess) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        for path, payload in [("/search", {"query": "lift"}), ("/ask", {"question": "lift?"})]:
            refused = anonymous.post(path, json=payload)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "API key" in refused.json()["error"]
            wrong = anonymous.post(path, json=payload, headers={"X-API-Key": "kb_wrong"})
            assert wrong.status_code == 401
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/livez").status_code == 200
        assert anonymous.get("/readyz").status_code == 200


def test_rate_limit_answers_429_with_retry_after(
    service: ServiceProcess, keys: dict[str, str]
) -> None:
    headers = {"X-API-Key": keys["limited"]}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as limited:
        statuses = [
            limited.post("/search", json={"query": "lift", "mode": "bm25"}).status_code
            for _ in range(2)
        ]
        refused = limited.post("/search", json={"query": "lift", "mode": "bm25"})
    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "rate limit" in refused.json()["error"]


def _png(width: int, height: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "gray").save(buffer, format="PNG")
    return buffer.getvalue()


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("oversized body", {"content": b"{" + b" " * (3 * 1024 * 1024) + b"}"}, 413, "limit"),
    ("malformed json", {"content": b'{"query": "lift", '}, 400, "Invalid JSON"),
    ("query too long", {"json": {"query": "lift " * 400}}, 400, "the limit is 1000"),
    ("k too large", {"json": {"query": "lift", "k": 1000}}, 400, "the limit is 50"),
    ("no query", {"json": {"k": 3}}, 400, "exactly one of query"),
    ("unknown mode", {"json": {"query": "lift", "mode": "magic"}}, 400, "mode"),
    ("unknown field", {"json": {"query": "lift", "fields": 1}}, 400, "Extra inputs"),
    (
        "too many pixels",
        {"files": {"image": ("big.png", _png(1200, 1000), "image/png")}},
        413,
        "1,200,000 pixels",
    ),
    (
        "not an image",
        {"files": {"image": ("a.png", b"%PDF-1.4 not an image", "image/png")}},
        415,
        "not an image",
    ),
    (
        "image as url",
        {"files": {"image": (None, "http://127.0.0.1:9/x.png")}},
        400,
        "does not fetch",
    ),
    (
        "image without CLIP",
        {"files": {"image": ("ok.png", _png(32, 32), "image/png")}},
        503,
        "needs a CLIP checkpoint",
    ),
]


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_the_right_status_and_say_why(
    client: httpx.Client, name: str, request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    if "content" in request_kwargs:
        request_kwargs = {**request_kwargs, "headers": {"content-type": "application/json"}}
    response = client.post("/search", **request_kwargs)
    assert response.status_code == status, (name, response.text)
    assert message in response.text, (name, response.text)


def test_metrics_cover_requests_warmup_generation_and_readiness(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    # The service's middleware serves them; BentoML's own instruments are off (they cost
    # throughput and repeat kb_serving_request_seconds).
    assert "bentoml_service_request" not in text
    assert client.post("/metrics").status_code == 405
    for needle in [
        'kb_serving_request_seconds_count{endpoint="/search",status="200"}',
        'kb_serving_request_seconds_count{endpoint="/search",status="401"}',
        'kb_serving_warmup_seconds{component="generator"}',
        'kb_serving_warmup_seconds{component="total"}',
        'kb_serving_model_load_seconds{model="text_encoder"}',
        "kb_serving_retrieval_seconds_count",
        "kb_serving_generation_seconds_count",
        "kb_serving_first_token_seconds_count",
        "kb_serving_generated_tokens_total",
        "kb_serving_ready 1.0",
    ]:
        assert needle in text, needle
    # Queries are encoded by the int8 ONNX graph (the default) of the index's model.
    encoders = [line for line in text.splitlines() if line.startswith("kb_serving_query_encoder")]
    assert len(encoders) == 1 and encoders[0].endswith(" 1.0"), encoders
    assert 'runtime="onnx-int8"' in encoders[0] and 'version="minilm-l6-v2-int8"' in encoders[0]


def test_logs_are_json_lines_with_request_ids(
    service: ServiceProcess, client: httpx.Client
) -> None:
    request_id = f"test-{uuid.uuid4().hex[:12]}"
    response = client.post("/search", json={"query": "lift"}, headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    time.sleep(0.5)
    entries = [
        json.loads(line)
        for line in service.log_path.read_text().splitlines()
        if line.startswith("{") and request_id in line
    ]
    access = [e for e in entries if e["logger"] == "kb_platform.serving.access"]
    assert access and access[0]["request_id"] == request_id
    assert access[0]["status"] == 200 and access[0]["path"] == "/search"
    assert access[0]["api_key"] == "tests" and access[0]["duration_ms"] > 0


def test_keeps_answering_while_elasticsearch_restarts(
    node: SecondNode, service: ServiceProcess, client: httpx.Client
) -> None:
    query, expected = KNOWN[0]
    node.run("down")
    try:
        deadline = time.monotonic() + 10
        while probe(f"{service.url}/readyz") != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert probe(f"{service.url}/readyz") == 503
        assert probe(f"{service.url}/livez") == 200
        started = time.monotonic()
        down = client.post("/search", json={"query": query})
        assert down.status_code == 503 and down.json()["code"] == "search_unavailable"
        assert time.monotonic() - started < 5
        assert client.post("/ask", json={"question": QUESTION}).status_code == 503
    finally:
        node.run("up")
    deadline = time.monotonic() + 60
    while probe(f"{service.url}/readyz") != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert probe(f"{service.url}/readyz") == 200
    back = client.post("/search", json={"query": query, "k": 5})
    assert back.status_code == 200
    assert expected in [hit["doc_id"] for hit in back.json()["hits"]][:3]

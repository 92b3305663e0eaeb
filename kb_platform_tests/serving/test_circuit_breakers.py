"""Circuit breakers against real services that go away and come back: the encoder service (the
serving tests' own, stopped and started again) under the pipeline's client; Elasticsearch and an
OpenAI-compatible answer server (llama.cpp's) under the RAG service, a real `bentoml serve`.

The shared Elasticsearch is not stopped: the RAG service reaches it, and the answer server,
through TCP forwarders of this module's own, which the tests cut (new connections are accepted
and closed at once, so each attempt is counted; or the port is closed, so connections are
refused) and restore. That is the one stand-in here, for a fault that cannot be made on the
shared cluster itself; the bytes that pass are the real servers'.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from elastic_transport import ConnectionError as TransportConnectionError
from elasticsearch import Elasticsearch

from kb_platform.config import get_settings
from kb_platform.defs.failures import typed_failures
from kb_platform.encoder_service.client import EncoderClient
from kb_platform.errors import RETRYABLE_ERROR_CLASSES, ServiceUnavailable
from kb_platform.index.client import elasticsearch_client
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.models.answerers import DEFAULT_ANSWERER, ensure_in_store
from kb_platform.resilience.circuit_breaker import BreakerConfig, CircuitBreaker, State
from kb_platform.resilience.elasticsearch import ElasticsearchUnavailable
from kb_platform.serving.answer import answer_question
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.generation import OpenAICompatibleGenerator
from kb_platform.serving.launcher import ServiceProcess, private_bentoml_home, probe
from kb_platform.serving.readiness import Readiness
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.corpus_slice import index_slice
from kb_platform_tests.serving.encoder_stack import TOKEN
from kb_platform_tests.serving.test_serving_units import hits

pytestmark = pytest.mark.services

ANSWER_MODEL = "smollm2-135m-instruct"
QUESTION = "what is the effect of slipstream on the lift of a wing?"
SLICE_DOCS = 12  # Cranfield 1..12: cran-1 answers QUESTION
ES_COOLDOWN_S = 5.0


class Forwarder:
    """A loopback port that pipes each connection to ``upstream``; ``cut()`` makes it accept
    and close every new connection (counted in ``accepted``) and drops the open ones;
    ``close()`` stops listening (connections are refused); ``restore()`` forwards again."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.accepted = 0
        self.cutting = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        self.cutting = False
        if self._listener is None:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self.cutting = True
        self._drop_open()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread (Linux)
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._drop_open()

    def _drop_open(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
            if self.cutting:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update({client, server})
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _breaker(name: str, **config: object) -> CircuitBreaker:
    return CircuitBreaker(name, f"test-{uuid.uuid4().hex[:6]}", BreakerConfig(**config))  # type: ignore[arg-type]


# the pipeline's encoder client


def test_the_encoder_clients_breaker_opens_on_a_stopped_service_and_closes_when_it_is_back(
    encoder_service: ServiceProcess,
) -> None:
    breaker = _breaker("encoder", failure_threshold=3, cooldown_s=1.0)
    client = EncoderClient(encoder_service.url, TOKEN, timeout_s=30, breaker=breaker)
    assert client.embed_texts(["lift of a wing"]).shape == (1, 384)
    encoder_service.stop()
    try:
        for _ in range(3):
            with pytest.raises(ServiceUnavailable, match="did not answer"):
                client.embed_texts(["lift"])
        assert breaker.state is State.OPEN
        before = breaker.stats()
        for _ in range(5):
            with pytest.raises(ServiceUnavailable, match="circuit open") as raised:
                client.embed_texts(["lift"])
            # the same class as any outage: retried by the step's RetryPolicy, never a dead
            # letter (runs.failed_for_an_outage goes by the class name)
            assert raised.value.retryable
            assert type(raised.value).__name__ in RETRYABLE_ERROR_CLASSES
        with pytest.raises(ServiceUnavailable), typed_failures("0123456789abcdef"):
            client.embed_texts(["lift"])  # passes through: no Failure(allow_retries=False)
        after = breaker.stats()
        assert after.admitted == before.admitted  # not one call reached for the dead port
        assert after.short_circuited == before.short_circuited + 6
    finally:
        encoder_service.start()
        encoder_service.wait_ready(timeout=300)
    while breaker.blocked_for() is not None:  # the cool-down (1 s) is long over by now
        time.sleep(0.1)
    assert client.embed_texts(["lift of a wing"]).shape == (1, 384)  # the probe
    stats = breaker.stats()
    assert stats.state is State.CLOSED and stats.opened == 1
    client.close()


# Elasticsearch and the answer server, in process


def test_an_elasticsearch_client_fails_fast_with_its_own_error_class_once_open() -> None:
    breaker = _breaker("elasticsearch", failure_threshold=2, cooldown_s=60)
    es = elasticsearch_client(f"http://127.0.0.1:{free_port()}", max_retries=0, breaker=breaker)
    readiness = Readiness(es, "kb-chunks")
    for _ in range(2):
        with pytest.raises(TransportConnectionError):
            es.info()
    assert breaker.state is State.OPEN
    admitted = breaker.stats().admitted
    with pytest.raises(ElasticsearchUnavailable) as raised:
        es.options(request_timeout=1).search(index="kb-chunks", size=1)  # shares the transport
    assert isinstance(raised.value, TransportConnectionError)  # handled as any outage
    assert 59 < raised.value.retry_after_s <= 60
    ok, detail = readiness.index_status()
    assert not ok and "circuit open" in detail and "2 failures in a row" in detail
    assert breaker.stats().admitted == admitted  # neither call left the process
    es.close()


def test_an_open_answer_server_breaker_gives_the_extractive_answer_at_once() -> None:
    breaker = _breaker("generator", failure_threshold=2, cooldown_s=60)
    dead = OpenAICompatibleGenerator(
        f"http://127.0.0.1:{free_port()}/v1", ANSWER_MODEL, breaker=breaker
    )
    options = {"max_new_tokens": 8, "max_source_chars": 500}
    for _ in range(2):
        answer = answer_question(QUESTION, hits(), dead, deadline=time.monotonic() + 10, **options)
        assert answer.extractive and "ConnectError" in (answer.fallback_reason or "")
    assert breaker.state is State.OPEN
    admitted = breaker.stats().admitted
    answer = answer_question(QUESTION, hits(), dead, deadline=time.monotonic() + 10, **options)
    assert answer.extractive and answer.finish_reason == "error" and answer.tokens == 0
    assert "circuit open" in (answer.fallback_reason or "")
    assert answer.citations and "slipstream" in answer.text
    assert breaker.stats().admitted == admitted and breaker.stats().short_circuited == 1
    dead.close()


@pytest.fixture(scope="module")
def answer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """llama.cpp's OpenAI-compatible server with the smallest packaged chat model."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "llama_cpp.server"),
                *("--model", str(ensure_in_store(ANSWER_MODEL)), "--model_alias", ANSWER_MODEL),
                *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while probe(f"http://127.0.0.1:{port}/v1/models") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_answer_server_breaker_closes_when_the_server_is_back(answer_server: int) -> None:
    forwarder = Forwarder(("127.0.0.1", answer_server))
    breaker = _breaker("generator", failure_threshold=1, cooldown_s=0.5)
    remote = OpenAICompatibleGenerator(f"{forwarder.url}/v1", ANSWER_MODEL, breaker=breaker)
    options = {"max_new_tokens": 4, "max_source_chars": 300}
    try:
        forwarder.close()  # connections refused
        answer = answer_question(
            QUESTION, hits(), remote, deadline=time.monotonic() + 30, **options
        )
        assert answer.extractive and breaker.state is State.OPEN
        forwarder.restore()
        while breaker.blocked_for() is not None:
            time.sleep(0.05)
        answer = answer_question(
            QUESTION, hits(), remote, deadline=time.monotonic() + 60, **options
        )
        assert answer.finish_reason != "error" and answer.tokens > 0, answer
        assert breaker.state is State.CLOSED
    finally:
        remote.close()
        forwarder.close()


# the RAG service


@pytest.fixture(scope="module")
def index_base(es: Elasticsearch, corpus_dir: Path) -> Iterator[str]:
    names = IndexNames(f"breaker-test-{uuid.uuid4().hex[:8]}")
    index_slice(es, names, corpus_dir / "retrieval" / "cranfield", SLICE_DOCS)
    yield names.base
    delete_family(es, names)


@pytest.fixture(scope="module")
def es_forwarder() -> Iterator[Forwarder]:
    url = httpx.URL(get_settings().elasticsearch_url)
    forwarder = Forwarder((url.host, url.port or 9200))
    yield forwarder
    forwarder.close()


@pytest.fixture(scope="module")
def answer_forwarder(answer_server: int) -> Iterator[Forwarder]:
    forwarder = Forwarder(("127.0.0.1", answer_server))
    yield forwarder
    forwarder.close()


@pytest.fixture(scope="module")
def key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def service(
    index_base: str,
    es_forwarder: Forwarder,
    answer_forwarder: Forwarder,
    key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    ensure_in_store(DEFAULT_ANSWERER)  # the service declares it, whichever generator runs
    work = tmp_path_factory.mktemp("service")
    keys_file = work / "keys.json"
    entry = {"sha256": hash_key(key), "name": "tests", "rate_per_s": 1000, "burst": 1000}
    keys_file.write_text(json.dumps([entry]))
    service = ServiceProcess(
        port=free_port(),
        env={
            "KB_ELASTICSEARCH_URL": es_forwarder.url,
            "KB_ELASTICSEARCH_INDEX_BASE": index_base,
            "KB_SERVING_API_KEYS_FILE": str(keys_file),
            "KB_SERVING_GENERATOR": "openai",
            "KB_SERVING_OPENAI_BASE_URL": f"{answer_forwarder.url}/v1",
            "KB_SERVING_OPENAI_MODEL": ANSWER_MODEL,
            "KB_SERVING_MAX_NEW_TOKENS": "8",
            "KB_SERVING_ELASTICSEARCH_BREAKER": json.dumps(
                {"failure_threshold": 3, "cooldown_s": ES_COOLDOWN_S}
            ),
            "KB_SERVING_GENERATOR_BREAKER": '{"failure_threshold": 2, "cooldown_s": 300}',
            "KB_SERVING_CLIP_EXPORT_DIR": str(work / "no-clip-checkpoint"),
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


def _metric(client: httpx.Client, name: str, labels: str) -> float:
    text = client.get("/metrics").text
    pattern = re.compile(rf"^{re.escape(name)}{{([^}}]*)}} ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(value) for found, value in pattern.findall(text) if labels in found)


ES = 'dependency="elasticsearch"'
GENERATOR = 'dependency="generator"'


def test_an_open_elasticsearch_breaker_answers_503_with_retry_after_at_once(
    service: ServiceProcess, client: httpx.Client, es_forwarder: Forwarder
) -> None:
    assert client.post("/search", json={"query": "slipstream"}).status_code == 200
    es_forwarder.cut()
    try:
        for _ in range(20):  # until the breaker has seen its three failures
            down = client.post("/search", json={"query": "slipstream"})
            assert down.status_code == 503 and down.json()["code"] == "search_unavailable"
            if "circuit open" in down.json()["error"]:
                break
        assert "circuit open" in down.json()["error"], down.text
        assert 1 <= int(down.headers["retry-after"]) <= ES_COOLDOWN_S
        assert down.json()["request_id"] == down.headers["x-request-id"]
        assert probe(f"{service.url}/readyz") == 503
        assert _metric(client, "kb_circuit_breaker_state", ES) >= 1

        # Many requests at once while it is open: each is answered at the front door; no
        # connection is attempted but the breaker's own half-open probes.
        attempts = es_forwarder.accepted
        probes = _metric(client, "kb_circuit_breaker_transitions_total", 'state="half_open"')
        short = _metric(client, "kb_circuit_breaker_short_circuited_calls_total", ES)
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda q: client.post("/search", json={"query": q}),
                    [f"lift {n}" for n in range(32)],
                )
            )
        assert all(a.status_code == 503 for a in answers)
        probes = _metric(client, "kb_circuit_breaker_transitions_total", 'state="half_open"') - (
            probes
        )
        assert es_forwarder.accepted - attempts <= 2 * probes  # a probe: at most one retry
        refused = _metric(client, "kb_circuit_breaker_short_circuited_calls_total", ES) - short
        assert refused >= 32 - probes
        assert client.post("/ask", json={"question": QUESTION}).status_code == 503
    finally:
        es_forwarder.restore()
    # back: the readiness probe (or a request) after the cool-down closes it
    deadline = time.monotonic() + 60
    while probe(f"{service.url}/readyz") != 200:
        assert time.monotonic() < deadline, service.tail()
        time.sleep(0.5)
    back = client.post("/search", json={"query": "slipstream", "k": 3})
    assert back.status_code == 200 and back.json()["hits"]
    assert _metric(client, "kb_circuit_breaker_state", ES) == 0
    assert "circuit for elasticsearch" in service.log_path.read_text()


def test_an_open_answer_server_breaker_makes_ask_extractive_and_keeps_the_service_ready(
    service: ServiceProcess, client: httpx.Client, answer_forwarder: Forwarder
) -> None:
    # (the service's warm-up reached the server: GET /models)
    answer_forwarder.close()  # the answer server's port refuses connections
    try:
        for _ in range(2):
            failed = client.post("/ask", json={"question": QUESTION}).json()
            assert failed["extractive"] and "ConnectError" in failed["fallback_reason"]
        short = _metric(client, "kb_circuit_breaker_short_circuited_calls_total", GENERATOR)
        body = client.post("/ask", json={"question": QUESTION}).json()
        assert body["extractive"] is True and body["finish_reason"] == "error"
        assert "circuit open" in body["fallback_reason"] and body["tokens_generated"] == 0
        assert body["citations"] and any("slipstream" in c["snippet"] for c in body["citations"])
        assert _metric(client, "kb_circuit_breaker_state", GENERATOR) == 2
        assert _metric(client, "kb_circuit_breaker_short_circuited_calls_total", GENERATOR) == (
            short + 1
        )
        assert probe(f"{service.url}/readyz") == 200  # /ask still answers: ready
        assert client.post("/search", json={"query": "slipstream"}).status_code == 200
    finally:
        answer_forwarder.restore()

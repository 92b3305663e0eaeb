"""Secrets never reach a log line or Dagster's metadata.

Distinctive values are configured for every secret the pipeline and the services take (the
Elasticsearch API key, the Kafka SASL user and password, the encoder token, a RAG API key),
passed the way production passes them (``dagster.EnvVar`` in the resources, a token file for the
encoder service, a hash of the key for the RAG front door). Real work uses them: a Kafka ingest
sensor tick, the processing run of the admitted document (text embeddings through the real
encoder service, the chunks indexed in Elasticsearch), the run's audit outcome and the offset
commit; requests with a right and a wrong token or key to the encoder service and the RAG front
door. Then every place a secret could leak to is searched for each value: the Python log
records of this process (all loggers, DEBUG and up), its stdout and stderr (librdkafka's own
lines), the instance's event log of the runs (step logs, materialization metadata), the run
records (tags, config), the job and plan snapshots the UI shows, the sensor's run requests and
cursor, the audit trail topic, and the services' log files. The search is shown to work by
finding values that are there on purpose (a run tag, the run's request id in the encoder's log,
the key's name in the RAG access log, the secret's variable name in the job snapshot).

The local services run without security: Elasticsearch ignores the ApiKey header, and Kafka's
PLAINTEXT listener ignores the SASL settings (librdkafka warns that the protocol is not SASL) —
so the values can be made up here and the connections still work.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from dagster import (
    DagsterInstance,
    EnvVar,
    FilesystemIOManager,
    PipesSubprocessClient,
    build_resources,
    build_sensor_context,
)
from dagster._serdes import serialize_value

from kb_platform.config import REPO_ROOT, Settings
from kb_platform.contracts import Modality
from kb_platform.definitions import build_definitions
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.resources import encoder_resources, kafka_names
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform.serving.asgi import Receive, Scope, Send
from kb_platform.serving.auth import hash_key, new_key
from kb_platform.serving.launcher import (
    ENCODER_SERVICE,
    ServiceProcess,
    private_bentoml_home,
    probe,
)
from kb_platform.serving.middleware import ServingMiddleware
from kb_platform.serving.settings import ServingSettings
from kb_platform.structured_logs import REQUEST_ID_TAG, JsonFormatter, configure_json_logging
from kb_platform_tests.integration.kafka_helpers import drain, message, outcome_sensor_on, produce
from kb_platform_tests.ports import free_port

pytestmark = pytest.mark.services

RUN = uuid.uuid4().hex[:12]
ES_API_KEY = f"kbsecret-es-api-key-{RUN}"
SASL_USERNAME = f"kbsecret-sasl-user-{RUN}"
SASL_PASSWORD = f"kbsecret-sasl-password-{RUN}"
ENCODER_TOKEN = f"kbsecret-encoder-token-{RUN}"
WRONG_ENCODER_TOKEN = f"kbsecret-wrong-encoder-token-{RUN}"
RAG_KEY = new_key()
WRONG_RAG_KEY = new_key()
RAG_KEY_NAME = f"secrets-test-client-{RUN}"
MARKER = f"logged-on-purpose-{RUN}"  # a run tag: the search must find it
CANARY, CANARY_EXTRA = f"canary-message-{RUN}", f"canary-extra-{RUN}"  # logged by the test
ENV = {
    "KB_ELASTICSEARCH_API_KEY": ES_API_KEY,
    "KB_KAFKA_SASL_USERNAME": SASL_USERNAME,
    "KB_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
    "KB_ENCODER_TOKEN": ENCODER_TOKEN,
}
TEXTS = ["Boundary layer transition on a flat plate.", "Flutter of swept wings."]

Sources = dict[str, str]  # where a text was found -> the text


def leaks(sources: Sources, value: str) -> list[str]:
    """The sources that hold ``value``."""
    return sorted(name for name, text in sources.items() if value in text)


class Records(logging.Handler):
    """Every log record of the process, as the JSON line our formatter writes plus the raw
    record (message arguments and extra fields, whatever a handler might print)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.formatter_ = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.formatter_.format(record)
        except Exception as exc:  # a record our formatter cannot write: keep what it holds
            line = f"unformattable ({exc!r})"
        self.lines.append(f"{line} {record.getMessage()} {vars(record)!r}")


@contextmanager
def captured_records() -> Iterator[Records]:
    """A handler on the root logger (DEBUG) and on every logger that does not propagate."""
    handler = Records()
    root = logging.getLogger()
    level = root.level
    loggers = [root] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in loggers:
        logger.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.setLevel(level)
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real encoder service (MiniLM), its token read from a file as a mounted Secret."""
    work = tmp_path_factory.mktemp("encoder")
    (work / "token").write_text(ENCODER_TOKEN + "\n")
    service = ServiceProcess(
        port=free_port(),
        env={
            "KB_ENCODER_TOKEN_FILE": str(work / "token"),
            "KB_CLIP_DIR": str(work / "clip"),  # no CLIP checkpoint: text embeddings only
            "BENTOML_HOME": str(private_bentoml_home(work / "bentoml")),
        },
        log_path=work / "service.log",
        service=ENCODER_SERVICE,
    )
    with service.running(timeout=240):
        yield service


def test_pipeline_secrets_stay_out_of_logs_events_and_metadata(
    secret_env: None,
    encoder: ServiceProcess,
    kafka_service: None,
    es,
    settings: Settings,
    corpus_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    names = kafka_names(settings)
    names.update(
        ingest_topic_prefix=f"sec-{RUN}.ingest.",
        dlq_topic_prefix=f"sec-{RUN}.dlq.",
        audit_topic=f"sec-{RUN}.audit",
        consumer_group=f"sec-{RUN}-group",
        idle_wait_s=0.0,
    )
    # as kb_platform.resources.build_resources makes them in production: secrets by EnvVar
    kafka = KafkaResource(
        **names,
        poll_timeout_s=3.0,
        security_protocol="PLAINTEXT",  # the local broker's; SASL settings are ignored there
        sasl_mechanism="PLAIN",
        sasl_username=EnvVar("KB_KAFKA_SASL_USERNAME"),
        sasl_password=EnvVar("KB_KAFKA_SASL_PASSWORD"),
    )
    index_base = f"sec-{RUN}"
    elasticsearch = ElasticsearchResource(
        url=settings.elasticsearch_url,
        api_key=EnvVar("KB_ELASTICSEARCH_API_KEY"),
        index_base=index_base,
    )
    encoders = encoder_resources(Settings(encoder_url=encoder.url))
    resources = {
        "kafka": kafka,
        "elasticsearch": elasticsearch,
        **encoders,
        "blob_store": LocalBlobStore(base_dir=str(tmp_path / "blobs")),
        "processing": ProcessingResource.from_settings(settings),
        "clip": ClipResource(root_dir=str(tmp_path / "clip")),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "parquet_io_manager": ParquetIOManager(base_uri=str(tmp_path / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "assets")),
    }
    # Resolved as in a run, the clients get the values themselves (not the variables' names);
    # the test's own producer and readers use these (outside a run, an EnvVar field is still
    # the variable's name, which librdkafka refuses as a value).
    with build_resources({"kafka": kafka, "elasticsearch": elasticsearch, **encoders}) as live:
        assert live.kafka.client_config()["sasl.password"] == SASL_PASSWORD
        assert live.kafka.client_config()["sasl.username"] == SASL_USERNAME
        assert live.elasticsearch.api_key == ES_API_KEY
        assert live.text_encoder.service_token == ENCODER_TOKEN
        live_kafka: KafkaResource = live.kafka

    live_kafka.create_topics(partitions=1)
    topic = kafka.topics().ingest(Modality.DOCUMENT)
    document = corpus_dir / "documents/unstructured/example-docs/fake-text.txt"
    defs = build_definitions(resources)
    try:
        with DagsterInstance.ephemeral() as instance, captured_records() as records:
            # what a logger is given in its message or as an extra field is searched
            logging.getLogger("kb_platform.canary").info(
                "%s", CANARY, extra={"field": CANARY_EXTRA}
            )
            produce(live_kafka, topic, [message(document)])
            with build_sensor_context(instance=instance, resources=defs.resources) as context:
                tick = kafka_ingest_sensor(context)
            (request,) = tick.run_requests
            instance.add_dynamic_partitions(
                "documents", list(tick.dynamic_partitions_requests[0].partition_keys)
            )
            result = defs.resolve_job_def("process_documents").execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags={**request.tags, "kb/secrets-test": MARKER},
            )
            assert result.success  # so the encoder accepted the token the run resolved
            outcome_sensor_on(instance, result, kafka)  # the audit trail's "indexed" record
            with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
                commit_settled_offsets(context)

            runs = instance.get_runs()
            sources: Sources = {
                "event log": "\n".join(
                    serialize_value(entry)
                    for run in runs
                    for entry in instance.all_logs(run.run_id)
                ),
                "run records (tags, config)": "\n".join(serialize_value(run) for run in runs),
                "job snapshots": "\n".join(
                    serialize_value(instance.get_job_snapshot(run.job_snapshot_id)) for run in runs
                ),
                "execution plan snapshots": "\n".join(
                    serialize_value(
                        instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
                    )
                    for run in runs
                ),
                "sensor result (run requests, cursor)": repr(tick.run_requests) + str(tick.cursor),
            }
        # the encoder's front door: the right token, a wrong one, one in the query string (sent
        # after the capture: httpx logs the URLs this test's own client asks for)
        ok = httpx.post(
            f"{encoder.url}/embed_texts",
            json={"texts": TEXTS},
            headers={"Authorization": f"Bearer {ENCODER_TOKEN}"},
        )
        wrong = httpx.post(
            f"{encoder.url}/embed_texts",
            json={"texts": TEXTS},
            headers={"Authorization": f"Bearer {WRONG_ENCODER_TOKEN}"},
        )
        in_query = httpx.post(
            f"{encoder.url}/embed_texts?token={WRONG_ENCODER_TOKEN}", json={"texts": TEXTS}
        )
        assert (ok.status_code, wrong.status_code, in_query.status_code) == (200, 401, 401)
        assert WRONG_ENCODER_TOKEN not in wrong.text + in_query.text

        audit = drain(live_kafka, kafka.topics().audit, 2)
        sources["audit trail"] = "\n".join(
            f"{m.key()!r} {m.value()!r} {m.headers()!r}" for m in audit
        )
        time.sleep(0.5)  # the service's last lines reach its file
        sources["encoder service log"] = encoder.log_path.read_text(errors="replace")
        sources["python log records"] = "\n".join(records.lines)
        out = capfd.readouterr()
        sources["stdout and stderr"] = out.out + out.err
    finally:
        delete_family(es, IndexNames(index_base))

    for secret in (ES_API_KEY, SASL_USERNAME, SASL_PASSWORD, ENCODER_TOKEN, WRONG_ENCODER_TOKEN):
        assert leaks(sources, secret) == [], secret

    # the search finds what is there on purpose, in each kind of source
    assert leaks(sources, CANARY) == leaks(sources, CANARY_EXTRA) == ["python log records"]
    assert "run records (tags, config)" in leaks(sources, MARKER)
    assert "event log" in leaks(sources, f"{tmp_path}/tables")  # a materialization's path
    assert "encoder service log" in leaks(sources, request.tags[REQUEST_ID_TAG])
    assert "audit trail" in leaks(sources, request.partition_key)
    assert "python log records" in leaks(sources, request.partition_key)
    assert "job snapshots" in leaks(sources, "KB_KAFKA_SASL_PASSWORD")  # by name, not value
    assert "stdout and stderr" in leaks(sources, "sasl.mechanism")  # librdkafka's warning
    assert "sensor result (run requests, cursor)" in leaks(sources, topic)
    assert "execution plan snapshots" in leaks(sources, "search_index")


# --- the RAG service's front door ----------------------------------------------------------------


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands for BentoML's routes behind the front door (which holds the keys' logic)."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def front_door() -> ServingMiddleware:
    """The uvicorn factory: ServingMiddleware with the service's JSON logging (the RAG bento
    turns BentoML's own access log off; the middleware writes one line per request)."""
    configure_json_logging()
    return ServingMiddleware(_ok, ServingSettings())


def test_api_keys_stay_out_of_the_rag_front_door_s_access_log(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([{"sha256": hash_key(RAG_KEY), "name": RAG_KEY_NAME}]))
    port, log_path = free_port(), tmp_path / "rag.log"
    env = {**os.environ, "KB_SERVING_API_KEYS_FILE": str(keys_file)}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:front_door"),
                *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while probe(f"{url}/livez") != 200:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        body = {"query": "lift"}
        statuses = [
            httpx.post(f"{url}/search", json=body, headers={"Authorization": f"Bearer {RAG_KEY}"}),
            httpx.post(f"{url}/search", json=body, headers={"X-API-Key": RAG_KEY}),
            httpx.post(f"{url}/search", json=body, headers={"X-API-Key": WRONG_RAG_KEY}),
            httpx.post(f"{url}/search?api_key={WRONG_RAG_KEY}", json=body),
            httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {WRONG_RAG_KEY}"}),
        ]
        assert [r.status_code for r in statuses] == [200, 200, 401, 401, 401]
        assert all(WRONG_RAG_KEY not in r.text for r in statuses)
        time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(30)
    text = log_path.read_text(errors="replace")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [
        line
        for line in lines
        if line["logger"] == "kb_platform.serving.access" and line["path"] != "/livez"
    ]
    assert [line["status"] for line in access] == [200, 200, 401, 401, 401]
    for secret in (RAG_KEY, WRONG_RAG_KEY, hash_key(RAG_KEY), hash_key(WRONG_RAG_KEY)):
        assert secret not in text
    # the search finds what is logged on purpose: the key's name, the request's path
    assert [line.get("api_key") for line in access[:2]] == [RAG_KEY_NAME, RAG_KEY_NAME]
    assert RAG_KEY_NAME in text and '"path": "/search"' in text

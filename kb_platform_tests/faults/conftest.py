"""One deployment for the whole fault matrix (code server, daemon, PostgreSQL instance storage,
the encoder service, a blob store on a small filesystem of its own), and the matrix's table
printed at the end of the session."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.resources.kafka import KafkaResource
from kb_platform.serving.launcher import ServiceProcess
from kb_platform_tests.faults.deployment import Deployment
from kb_platform_tests.faults.faults import Matrix
from kb_platform_tests.faults.stream import Outcome
from kb_platform_tests.ports import free_port
from kb_platform_tests.postgres_databases import fresh_database, instance_env
from kb_platform_tests.serving.conftest import encoder_service, served_clip  # noqa: F401
from kb_platform_tests.serving.encoder_stack import TOKEN

OUTCOMES: list[Outcome] = []
BLOB_FS_SIZE = "256m"
CORPUS_TEXT = "documents/unstructured/example-docs/fake-text.txt"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.section("fault matrix")
        terminalreporter.write_line(Outcome.header())
        for outcome in OUTCOMES:
            terminalreporter.write_line(outcome.row())


@pytest.fixture(scope="package")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tmpfs of its own, so "disk full" is a real ENOSPC (needs root, as CI runs)."""
    path = tmp_path_factory.mktemp("blobs")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={BLOB_FS_SIZE}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"the blob store's filesystem could not be mounted: {mounted.stderr}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="package")
def matrix(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_service: None,
    kafka: KafkaResource,
    es: Elasticsearch,
    corpus_dir: Path,
    encoder_service: ServiceProcess,  # noqa: F811
    blob_dir: Path,
) -> Iterator[Matrix]:
    base = tmp_path_factory.mktemp("fault-matrix")
    name = f"faults-{uuid.uuid4().hex[:8]}"
    with fresh_database("faults") as database:
        yield from _running_matrix(
            base, name, database, kafka, es, corpus_dir, encoder_service, blob_dir
        )


def _running_matrix(
    base: Path,
    name: str,
    database: str,
    kafka: KafkaResource,
    es: Elasticsearch,
    corpus_dir: Path,
    encoder_service: ServiceProcess,  # noqa: F811
    blob_dir: Path,
) -> Iterator[Matrix]:
    scoped = kafka.namespaced(name, topic_partitions=2)
    scoped.create_topics()
    index_base = f"{name}-chunks"
    docs = base / "docs"
    docs.mkdir()
    marker = f"KB-NATIVE-CRASH-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(base / "dagster_home"),
        **instance_env(database),
        "KB_DATA_DIR": str(blob_dir),
        "KB_ALLOWED_ROOTS": json.dumps([str(docs)]),
        "KB_ELASTICSEARCH_INDEX_BASE": index_base,
        "KB_KAFKA_INGEST_TOPIC_PREFIX": scoped.ingest_topic_prefix,
        "KB_KAFKA_DLQ_TOPIC_PREFIX": scoped.dlq_topic_prefix,
        "KB_KAFKA_AUDIT_TOPIC": scoped.audit_topic,
        "KB_KAFKA_CONSUMER_GROUP": scoped.consumer_group,
        "KB_ENCODER_URL": encoder_service.url,
        "KB_ENCODER_TOKEN": TOKEN,
        "KB_FAULT_NATIVE_CRASH_MARKER": marker,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent / "native_crash"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    deployment = Deployment(base / "dagster_home", env, code_port=free_port())
    deployment.start_all()
    instance = deployment.instance()
    try:
        yield Matrix(
            deployment=deployment,
            instance=instance,
            kafka=scoped,
            es=es,
            alias=IndexNames(index_base).read_alias,
            docs=docs,
            body=(corpus_dir / CORPUS_TEXT).read_text(),
            blob_dir=blob_dir,
            encoder=encoder_service,
            crash_marker=marker,
        )
    finally:
        deployment.stop_all()
        instance.dispose()
        delete_family(es, IndexNames(index_base))

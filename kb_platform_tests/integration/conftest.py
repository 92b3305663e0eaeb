"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, FilesystemIOManager, PipesSubprocessClient

from kb_platform.config import get_settings
from kb_platform.contracts import Modality
from kb_platform.definitions import build_definitions
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.observability.exporter import Exporter, build_exporter, serve
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform_tests.ports import free_port


@pytest.fixture
def text_topic(kafka: KafkaResource, unique_name: str) -> tuple[KafkaResource, str]:
    """Topics of the test's own (one partition each) and the name of its text ingest topic."""
    scoped = kafka.namespaced(unique_name)
    scoped.create_topics(partitions=1)
    return scoped, scoped.topics().ingest(Modality.TEXT)


@pytest.fixture
def stack(
    kafka: KafkaResource, es, unique_name: str, tmp_path: Path, settings
) -> Iterator[tuple[DagsterInstance, Definitions, KafkaResource]]:
    scoped = kafka.namespaced(unique_name, poll_timeout_s=3.0)
    scoped.create_topics(partitions=1)
    index_base = f"rel-{uuid.uuid4().hex[:8]}"
    resources = {
        "kafka": scoped,
        "blob_store": LocalBlobStore(base_dir=str(tmp_path / "blobs")),
        "processing": ProcessingResource.from_settings(settings),
        "clip": ClipResource(root_dir=str(tmp_path / "clip")),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "elasticsearch": ElasticsearchResource(
            url=get_settings().elasticsearch_url, index_base=index_base
        ),
        "parquet_io_manager": ParquetIOManager(base_uri=str(tmp_path / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(tmp_path / "assets")),
    }
    defs = build_definitions(resources)
    with DagsterInstance.ephemeral() as instance:
        yield instance, defs, scoped
    delete_family(es, IndexNames(index_base))


@dataclass
class ServedExporter:
    """The pipeline exporter over the ``stack``'s instance and topics, serving /metrics."""

    exporter: Exporter
    address: str  # host:port
    stopping: threading.Event
    thread: threading.Thread

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


@pytest.fixture
def served_exporter(stack, settings) -> Iterator[ServedExporter]:
    instance, _, kafka = stack
    exporter = build_exporter(instance, kafka, ProcessingResource.from_settings(settings))
    port, stopping = free_port(), threading.Event()
    thread = threading.Thread(target=serve, args=(exporter, "127.0.0.1", port, stopping))
    thread.start()
    served = ServedExporter(exporter, f"127.0.0.1:{port}", stopping, thread)
    yield served
    served.stop()

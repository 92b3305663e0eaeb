"""A real `dagster dev` (webserver + daemon with its sensors) on an instance, data folder, index
and Kafka topics of its own, shared by the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.local_stack import DAGSTER_SCRIPT, dagster_dev_env
from kb_platform.resources.kafka import KafkaResource

PORT = os.environ.get("KB_E2E_DAGSTER_PORT", "3111")  # another for a second checkout


@pytest.fixture(scope="package")
def e2e_kafka(kafka: KafkaResource) -> KafkaResource:
    """Topics and consumer group of the e2e instance only: its sensors never see other tests'
    messages (or a developer's demo topics)."""
    scoped = kafka.namespaced(f"e2e-{uuid.uuid4().hex[:8]}", topic_partitions=1)
    scoped.create_topics()
    return scoped


@pytest.fixture(scope="package")
def dagster_env(
    tmp_path_factory: pytest.TempPathFactory, es: Elasticsearch, e2e_kafka: KafkaResource
) -> Iterator[dict[str, str]]:
    base: Path = tmp_path_factory.mktemp("e2e")
    index_base = f"e2e-chunks-{uuid.uuid4().hex[:8]}"
    env = dagster_dev_env(base, PORT, index_base, e2e_kafka)
    up = subprocess.run(
        ["bash", str(DAGSTER_SCRIPT), "up"], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        subprocess.run(["bash", str(DAGSTER_SCRIPT), "down"], env=env, capture_output=True)
        delete_family(es, IndexNames(index_base))

"""Integration tests run against the real local stack, which this fixture starts if needed
(starting is idempotent: with the stack already up it only checks readiness)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from elasticsearch import Elasticsearch

from kb_platform.config import REPO_ROOT, Settings
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource


def _service_up(service: str) -> None:
    script = REPO_ROOT / "deploy" / "local" / service / f"{service}.sh"
    result = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"could not start {service}:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def postgres_service() -> None:
    _service_up("postgres")


@pytest.fixture(scope="session")
def kafka_service() -> None:
    _service_up("kafka")


@pytest.fixture(scope="session")
def elasticsearch_service() -> None:
    _service_up("elasticsearch")


@pytest.fixture(scope="session")
def kafka(kafka_service: None, settings: Settings) -> KafkaResource:
    return KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers)


@pytest.fixture(scope="session")
def es(elasticsearch_service: None, settings: Settings) -> Iterator[Elasticsearch]:
    client = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
    yield client
    client.close()


@pytest.fixture
def unique_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"

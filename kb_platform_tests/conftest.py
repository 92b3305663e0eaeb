from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from kb_platform.config import REPO_ROOT, Settings, get_settings
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform_tests.kernel_sets import REQUESTED, check_applied, own_capability


def pytest_report_header() -> str:
    requested = os.environ.get(REQUESTED)
    origin = f"the second set, asked for {requested}" if requested else "this machine's own"
    return f"cpu kernels: {own_capability()} ({origin})"


def pytest_sessionstart(session: pytest.Session) -> None:
    requested = os.environ.get(REQUESTED)
    if requested:
        try:
            check_applied(requested, own_capability())
        except RuntimeError as exc:
            pytest.exit(str(exc), returncode=4)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def corpus_dir(settings: Settings) -> Path:
    path = settings.corpus_dir
    if not path.is_dir():
        pytest.fail(f"shared corpus not found at {path}; set KB_CORPUS_DIR")
    return path


# Real services, started by the tests' own setup if they are not up (starting is idempotent).
def _service_up(service: str) -> None:
    if os.environ.get("KB_TEST_EXTERNAL_SERVICES") == "1":
        return  # the services run already, started by someone else (another checkout, a cluster)
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

"""Zero downtime under real processes: two RAG service instances (``bentoml serve``) behind a
real HAProxy checking /readyz, a steady /search load through it, and a rolling
restart of both instances (kb_platform.serving.rolling_restart) during which the read alias
swaps to a new index version and a `dagster dev` of the test's own ingests documents produced to
Kafka. Every request is answered, every answer comes from the old or the new version, and every
message ends indexed or dead-lettered (`kb-platform audit`).

The benchmark (benchmarks/zero_downtime.py) runs the three scenarios apart, with a slow /ask
beside the /search load, and prints latency; this test runs them at once, /search only (an /ask
on two cores shared with a restarting instance and the daemon's runs can pass its own 60 s
limit: overload, not downtime), and asserts only properties."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from kb_platform.config import Settings
from kb_platform.evaluation.cranfield import load_queries
from kb_platform.index.lifecycle import alias_targets, delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.local_stack import dagster_dev_env
from kb_platform.resources.kafka import KafkaResource
from kb_platform.serving.zero_downtime import (
    IndexRoll,
    Ingestion,
    RagPool,
    delete_topics,
    embedded,
    index_documents,
    next_version_documents,
    roll_under_load,
    source_label,
)
from kb_platform_tests.ports import free_port
from kb_platform_tests.serving.corpus_slice import cranfield_chunks

pytestmark = pytest.mark.services

SLICE_DOCS = 60  # Cranfield abstracts: enough for every query to find something
TEXTS = "documents/unstructured/example-docs"
INGESTED = [
    f"{TEXTS}/fake-text.txt",
    f"{TEXTS}/norwich-city.txt",
    "bad-inputs/pillow/truncated_image.png",  # corrupt: dead-lettered, not lost
]
OLD, NEW = "cranfield", "cranfield-v2"  # the versions' source_uri schemes
INGESTED_SCHEME = "file"
UNFINISHED = "unfinished"


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder outside pytest's basetemp: concurrent pytest sessions prune each other's older
    basetemps, which would delete the instances' homes and logs under a test this long. Kept
    when the test fails (its logs: pool/*/service.log, pool/haproxy/haproxy.log, dagster/)."""
    path = Path(tempfile.mkdtemp(prefix="kb-zdt-test-"))
    (path / UNFINISHED).touch()  # the test removes it once every assertion held
    yield path
    if not (path / UNFINISHED).exists():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def names(es: Elasticsearch) -> Iterator[IndexNames]:
    names = IndexNames(f"zdt-test-{uuid.uuid4().hex[:8]}")
    yield names
    delete_family(es, names)


@pytest.fixture
def zdt_kafka(kafka: KafkaResource) -> Iterator[KafkaResource]:
    scoped = kafka.namespaced(f"zdt-{uuid.uuid4().hex[:8]}", topic_partitions=1)
    scoped.create_topics()
    yield scoped
    delete_topics(scoped)


def test_rolling_restart_with_index_swap_and_ingestion_loses_nothing(
    es: Elasticsearch,
    names: IndexNames,
    zdt_kafka: KafkaResource,
    settings: Settings,
    corpus_dir: Path,
    work: Path,
) -> None:
    folder = corpus_dir / "retrieval" / "cranfield"
    queries = [text for _, text in load_queries(folder)]
    documents = embedded(cranfield_chunks(folder, SLICE_DOCS))
    index_documents(es, names, documents)
    (first_version,) = alias_targets(es, names.read_alias)

    ingestion = Ingestion(
        dagster_dev_env(work / "dagster", str(free_port()), names.base, zdt_kafka),
        [corpus_dir / f for f in INGESTED],
        run_workers=1,  # one warm run worker instead of three: two cores, two instances
    )
    pool = RagPool(
        work / "pool",
        [free_port(), free_port()],
        free_port(),
        names.base,
        settings.elasticsearch_url,
    )
    index_roll = IndexRoll(es, names, next_version_documents(documents, NEW))

    def during_roll(server: str, phase: str) -> None:
        index_roll.on_phase(server, phase)  # the alias swaps while rag1 is out
        if (server, phase) == ("rag2", "drain"):
            index_roll.join()  # documents go to the new version's write alias
            ingestion.produce()

    ingestion.start()  # `dagster dev` starts beside the instances
    try:
        with pool.running():
            ingestion.wait_up()
            load = pool.load(queries, clients=3, rate_per_s=9, label=source_label)
            settled: list[str] = []
            result = roll_under_load(
                pool,
                "restart + index roll + ingestion",
                load,
                settle_s=2,
                on_phase=during_roll,
                after_roll=lambda: settled.append(ingestion.wait_settled()),
            )
        status, audit = ingestion.audit()
    finally:
        ingestion.stop()

    # Every request through HAProxy was answered, before, during and after the roll.
    assert load.failures() == []
    during = result.during_roll(endpoint=None)
    assert during.requests > 0
    assert [r.name for r in result.rolls] == ["rag1", "rag2"]
    for roll in result.rolls:  # each was out, seen down and seen ready again by HAProxy
        assert roll.out_at < roll.stopped_at <= roll.seen_down_at < roll.seen_up_at < roll.back_at

    # Every answer came from one version or the other, and once the aliases had moved, from the
    # new one only; documents ingested meanwhile show up beside it.
    answered = [s for s in load.samples if s.endpoint == "/search"]
    assert all(
        set(s.label.split("+")) <= {OLD, NEW, INGESTED_SCHEME} for s in answered if s.label
    ), result.labels()
    assert index_roll.before == [first_version] and index_roll.after == [names.index(2)]
    after_swap = [s for s in answered if s.started > index_roll.swapped_at]
    before_roll = [s for s in answered if s.started < result.roll_start]
    assert after_swap and all(OLD not in s.label.split("+") for s in after_swap)
    assert before_roll and all(s.label == OLD for s in before_roll)

    # Every message produced during the roll is accounted for: indexed or dead-lettered.
    assert (
        "3/3 settled: indexed 2, failed 1, dead-lettered 1, parked 0, in flight 0" in (settled[0])
    ), settled
    assert status == 0 and "unaccounted: 0" in audit, audit
    indexed = es.search(
        index=names.read_alias,
        size=0,
        query={"prefix": {"source_uri": "file:"}},
        aggs={"docs": {"cardinality": {"field": "doc_id"}}},
    )
    assert indexed["aggregations"]["docs"]["value"] == 2
    (work / UNFINISHED).unlink()

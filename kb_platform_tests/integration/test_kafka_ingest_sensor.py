"""kafka_ingest_sensor against the real broker: run requests with run keys, dynamic partitions,
cursor offsets, dead letters for poison messages, bounded batches, a lost cursor, backpressure
from the run queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from kb_platform.contracts import Modality
from kb_platform.defs.ingestion.kafka_sensor import JOB_NAME, kafka_ingest_sensor
from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.processing import ProcessingResource
from kb_platform_tests.integration.kafka_helpers import drain, message, produce


@pytest.fixture
def kafka_ns(kafka: KafkaResource, unique_name: str) -> KafkaResource:
    """A KafkaResource whose ingest and dead-letter topics belong to this test alone."""
    scoped = kafka.namespaced(unique_name, max_batch=50, poll_timeout_s=3.0)
    scoped.create_topics(partitions=1)
    return scoped


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as instance:
        yield instance


def _tick(instance, kafka_ns, tmp_path: Path, settings, cursor: str | None) -> SensorResult:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "kafka": kafka_ns,
            "blob_store": LocalBlobStore(base_dir=str(tmp_path / "blobs")),
            "processing": ProcessingResource.from_settings(settings),
        },
    )
    return kafka_ingest_sensor(context)


def test_messages_become_runs_and_poison_goes_to_the_dead_letter_topic(
    instance, kafka_ns, corpus_dir: Path, tmp_path: Path, settings
) -> None:
    topics = kafka_ns.topics()
    topic = topics.ingest(Modality.DOCUMENT)
    pdf = corpus_dir / "documents/py-pdf-sample-files/026-latex-multicolumn/multicolumn.pdf"
    text = corpus_dir / "documents/unstructured/example-docs/fake-text.txt"
    produce(
        kafka_ns,
        topic,
        [
            message(pdf),
            b"this is not json",
            message(text, "text"),
            json.dumps(
                {"source_id": "x", "uri": "file:///etc/passwd", "modality": "document"}
            ).encode(),
            message(pdf),  # the same bytes again: the same document, a second run key
        ],
    )
    result = _tick(instance, kafka_ns, tmp_path, settings, None)

    keys = [r.run_key for r in result.run_requests]
    assert keys == [f"{topic}:0:0", f"{topic}:0:2", f"{topic}:0:4"]
    partitions = [r.partition_key for r in result.run_requests]
    assert partitions[0] == partitions[2] != partitions[1]
    (add,) = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == sorted(set(partitions))
    assert result.run_requests[0].tags["kb/source"] == f"{topic}:0:0"
    assert result.run_requests[0].tags["dagster/max_runtime"] == "300"  # document: 180 s + 120 s
    assert result.run_requests[1].tags["dagster/max_runtime"] == "300"  # declared on the topic
    assert json.loads(result.cursor)["next_offsets"] == {f"{topic}:0": 5}

    # Not JSON: dlq.general. A file outside the allowed roots: refused, so dlq.<modality>.
    (general,) = drain(kafka_ns, topics.dlq(None), 1)
    headers = headers_dict(general.headers())
    assert general.value() == b"this is not json"
    assert headers["error-class"] == "InvalidMessage" and headers["source-offset"] == "1"
    assert headers["source-topic"] == topic and headers["first-failed-at"]
    (refused,) = drain(kafka_ns, topics.dlq(Modality.DOCUMENT), 1)
    assert headers_dict(refused.headers())["error-class"] == "InvalidMessage"
    assert b"/etc/passwd" in refused.value()

    # Nothing new: no runs, cursor unchanged.
    again = _tick(instance, kafka_ns, tmp_path, settings, result.cursor)
    assert again.run_requests == [] and json.loads(again.cursor) == json.loads(result.cursor)


def test_batches_are_bounded_and_a_lost_cursor_resumes_from_committed_offsets(
    instance, kafka_ns, corpus_dir: Path, tmp_path: Path, settings
) -> None:
    topic = kafka_ns.topics().ingest(Modality.TEXT)
    files = sorted((corpus_dir / "documents/unstructured/example-docs").glob("fake-text*.txt"))[:4]
    produce(kafka_ns, topic, [message(f, "text") for f in files])
    small = KafkaResource(**{**kafka_ns.model_dump(), "max_batch": 2})

    first = _tick(instance, small, tmp_path, settings, None)
    assert [r.run_key for r in first.run_requests] == [f"{topic}:0:0", f"{topic}:0:1"]
    second = _tick(instance, small, tmp_path, settings, first.cursor)
    assert [r.run_key for r in second.run_requests] == [f"{topic}:0:2", f"{topic}:0:3"]

    # The group committed offset 1 (message 0 finished). The cursor is lost: reading resumes
    # there, and the run keys are the ones already requested (Dagster skips them).
    consumer = kafka_ns.consumer(kafka_ns.consumer_group)
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    consumer.close()
    resumed = _tick(instance, kafka_ns, tmp_path, settings, None)
    assert [r.run_key for r in resumed.run_requests] == [f"{topic}:0:{i}" for i in (1, 2, 3)]


def _queued_run(instance: DagsterInstance) -> DagsterRun:
    """A run as the queued run coordinator leaves it on submit (its origin is never loaded)."""
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="kb_platform"))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), JOB_NAME)
    return create_run_for_test(
        instance, job_name=JOB_NAME, status=DagsterRunStatus.QUEUED, remote_job_origin=origin
    )


def test_a_full_run_queue_leaves_new_messages_on_kafka(
    instance, kafka_ns, corpus_dir: Path, tmp_path: Path, settings
) -> None:
    topic = kafka_ns.topics().ingest(Modality.TEXT)
    files = sorted((corpus_dir / "documents/unstructured/example-docs").glob("fake-text*.txt"))[:4]
    produce(kafka_ns, topic, [message(f, "text") for f in files])
    limited = settings.model_copy(update={"max_queued_runs": 3})
    waiting = [_queued_run(instance), _queued_run(instance)]

    first = _tick(instance, kafka_ns, tmp_path, limited, None)  # room for one more run
    assert [r.run_key for r in first.run_requests] == [f"{topic}:0:0"]
    waiting.append(create_run_for_test(instance, job_name=JOB_NAME))  # created, not queued yet

    full = _tick(instance, kafka_ns, tmp_path, limited, first.cursor)
    assert isinstance(full, SkipReason) and "3 runs queued" in (full.skip_message or "")

    for run in waiting:  # the queue empties: the rest is read, three runs' worth at a time
        instance.report_run_canceled(run)
    rest = _tick(instance, kafka_ns, tmp_path, limited, first.cursor)
    assert [r.run_key for r in rest.run_requests] == [f"{topic}:0:{i}" for i in (1, 2, 3)]

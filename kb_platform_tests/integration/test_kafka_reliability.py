"""Produce -> sensor -> runs -> dead letters -> committed offsets -> audit, on the real broker,
Elasticsearch and a Dagster instance: every offset ends indexed or dead-lettered."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka import TopicPartition
from dagster import DagsterInstance, SkipReason, build_sensor_context, job, op

from kb_platform.contracts import Modality
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.reliability.dlq_replay_sensor import MAX_ATTEMPTS, dlq_replay, replay_delay_s
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.kafka import ingest_lease
from kb_platform.kafka.audit import audit
from kb_platform.kafka.audit_trail import Event, trail
from kb_platform.kafka.dead_letters import DeadLetter, headers_dict
from kb_platform.kafka.ingest_reader import READER_CONFIG
from kb_platform.kafka.ledger import MessageState, markers
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import failed_partitions
from kb_platform_tests.integration.kafka_helpers import drain, failure_sensor_on, message, produce


def test_every_offset_ends_indexed_or_dead_lettered(stack, corpus_dir: Path) -> None:
    instance, defs, kafka = stack
    topic = kafka.topics().ingest(Modality.DOCUMENT)
    corrupt = next((corpus_dir / "documents").rglob("unreadablemetadata.pdf"))
    good = corpus_dir / "documents/unstructured/example-docs/fake-text.txt"
    produce(kafka, topic, [message(good), b"{not json", message(corrupt)])

    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        tick = kafka_ingest_sensor(context)
    assert len(tick.run_requests) == 2
    instance.add_dynamic_partitions(
        "documents", list(tick.dynamic_partitions_requests[0].partition_keys)
    )

    job = defs.resolve_job_def("process_documents")
    results = [
        job.execute_in_process(
            instance=instance, partition_key=r.partition_key, tags=r.tags, raise_on_error=False
        )
        for r in tick.run_requests
    ]
    assert [r.success for r in results] == [True, False]
    # `kb-platform reprocess --failed` would pick exactly the failed document.
    assert failed_partitions(instance) == [tick.run_requests[1].partition_key]

    # Before the failed run is dead-lettered, the commit stops in front of it.
    _commit(instance, kafka)
    assert _committed(kafka, topic) == 2

    failure_sensor_on(instance, results[1], kafka)
    failure_sensor_on(instance, results[1], kafka)  # a second evaluation publishes nothing more

    (letter,) = drain(kafka, kafka.topics().dlq(Modality.DOCUMENT), 1)
    headers = headers_dict(letter.headers())
    assert headers["error-class"] == "Corrupt" and headers["run-id"] == results[1].run_id
    assert headers["source-offset"] == "2" and headers["attempts"] == "1"
    assert json.loads(letter.value())["uri"] == corrupt.as_uri()
    assert len(drain(kafka, kafka.topics().dlq(Modality.DOCUMENT), 2)) == 1

    _commit(instance, kafka)
    assert _committed(kafka, topic) == 3
    consumer = kafka.consumer(kafka.consumer_group)
    (row,) = [r for r in audit(consumer, instance, kafka.topics().all_ingest()) if r.topic == topic]
    consumer.close()
    assert row.counts == {MessageState.INDEXED: 1, MessageState.DEAD_LETTERED: 2}
    assert row.unaccounted == 0 and row.lag == 0


def _commit(instance: DagsterInstance, kafka: KafkaResource) -> None:
    with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
        commit_settled_offsets(context)


def _committed(kafka: KafkaResource, topic: str) -> int:
    consumer = kafka.consumer(kafka.consumer_group)
    (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    return tp.offset


def test_dead_letters_are_replayed_with_backoff_then_parked(stack) -> None:
    instance, _, kafka = stack
    topic = kafka.topics().ingest(Modality.DOCUMENT)
    dlq = kafka.topics().dlq(Modality.DOCUMENT)
    now_ms = int(time.time() * 1000)
    letters = [
        # (attempts, published how long ago): due, parked, intake refusal, not yet due
        (
            DeadLetter(b"k", b"{}", topic, 0, 10, "Corrupt", "bad", doc_id="a" * 16, attempts=1),
            7200,
        ),
        (
            DeadLetter(
                b"k", b"{}", topic, 0, 11, "Timeout", "slow", doc_id="b" * 16, attempts=MAX_ATTEMPTS
            ),
            7200,
        ),
        (DeadLetter(b"k", b"{}", topic, 0, 12, "TooLarge", "big", attempts=1), 7200),
        # due, but its message was indexed after the letter was written (a retry made after all)
        (
            DeadLetter(b"k", b"{}", topic, 0, 14, "RunFailure", "", doc_id="d" * 16, attempts=1),
            7200,
        ),
        (DeadLetter(b"k", b"{}", topic, 0, 13, "Corrupt", "bad", doc_id="c" * 16, attempts=2), 10),
    ]
    producer = kafka.producer()
    for letter, age_s in letters:
        producer.produce(
            dlq,
            key=letter.key,
            value=letter.value,
            headers=letter.headers(),
            timestamp=now_ms - age_s * 1000,
        )
    assert producer.flush(30) == 0

    replay_run.execute_in_process(instance=instance, tags={"kb/source": f"{topic}:0:14"})
    ingest_lease.acquire(instance, "blue")  # another code location reads: it replays
    with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
        assert isinstance(dlq_replay(context), SkipReason)
    ingest_lease.acquire(instance, "in-process", now=time.time() + ingest_lease.DEFAULT_TTL_S + 1)
    with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
        result = dlq_replay(context)
    (request,) = result.run_requests
    assert request.partition_key == "a" * 16
    assert request.tags["kb/attempt"] == "2" and request.run_key == f"replay:{topic}:0:10:2"
    assert json.loads(result.cursor)["next_offsets"] == {f"{dlq}:0": 4}  # waits at offset 4
    assert markers(instance, [f"{topic}:0:11", f"{topic}:0:12"]) == {
        f"{topic}:0:11": MessageState.PARKED
    }
    assert replay_delay_s(1) == 60 and replay_delay_s(3) == 240 and replay_delay_s(20) == 3600
    # The replay and the parking are in the audit trail, by document.
    consumer = kafka.consumer("audit-reader", **READER_CONFIG)
    replayed = trail(consumer, kafka.topics().audit, "a" * 16)
    parked = trail(consumer, kafka.topics().audit, "b" * 16)
    consumer.close()
    assert [(r.event, r.source, r.detail) for r in replayed] == [
        (Event.REPLAYED, f"{topic}:0:10", "attempt 2")
    ]
    assert [(r.event, r.detail) for r in parked] == [
        (Event.PARKED, f"after {MAX_ATTEMPTS} attempts")
    ]

    # The replay ran. A location that reads the letters again from its own, older cursor (the
    # other side of a blue/green switch once the lease passes to it) replays and parks nothing
    # twice.
    replay_run.execute_in_process(instance=instance, tags=request.tags)
    with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
        again = dlq_replay(context)
    assert again.run_requests == []
    consumer = kafka.consumer("audit-reader-2", **READER_CONFIG)
    assert len(trail(consumer, kafka.topics().audit, "a" * 16)) == 1
    assert len(trail(consumer, kafka.topics().audit, "b" * 16)) == 1
    consumer.close()


@op
def replayed() -> None:
    pass


@job
def replay_run() -> None:
    replayed()

"""Producing and reading test messages on the real broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster import (
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    build_run_status_sensor_context,
)

from kb_platform.defs.reliability.audit_sensor import audit_run_outcomes
from kb_platform.defs.reliability.dead_letter_sensor import dead_letter_on_failure
from kb_platform.kafka.audit import audit
from kb_platform.resources.kafka import KafkaResource


def produce(kafka_ns: KafkaResource, topic: str, values: list[bytes]) -> list[str]:
    """Produces ``values`` in order; returns their offsets as run tags carry them
    (``kb/source-offset``), so a test can tell its own runs from other tests' on a topic."""
    producer = kafka_ns.producer()
    offsets: list[str] = []
    for i, value in enumerate(values):
        producer.produce(
            topic,
            key=f"k{i}".encode(),
            value=value,
            on_delivery=lambda error, msg: offsets.append(str(msg.offset())) if not error else None,
        )
    assert producer.flush(30) == 0
    assert len(offsets) == len(values), "the broker did not confirm every message"
    return offsets


def wait_for_group_coordinator(consumer: Consumer, topic: str, timeout_s: float = 60.0) -> None:
    """Waits until the consumer's group coordinator answers (a broker that has just started
    answers NOT_COORDINATOR while it loads the offsets topic)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            consumer.committed([TopicPartition(topic, 0)], timeout=10)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def message(path: Path, modality: str = "document") -> bytes:
    return json.dumps({"source_id": path.name, "uri": path.as_uri(), "modality": modality}).encode()


def drain(kafka_ns: KafkaResource, topic: str, expected: int) -> list:
    consumer = kafka_ns.consumer(f"reader-{topic}")
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages = []
    for _ in range(100):
        batch = consumer.consume(num_messages=expected, timeout=0.2)
        messages += [m for m in batch if m.error() is None]
        if len(messages) >= expected:
            break
    consumer.close()
    return messages


def assert_all_accounted(instance, kafka: KafkaResource) -> None:
    """The audit finds every offset of the test's ingest topics in a known state."""
    consumer = kafka.consumer(kafka.consumer_group)
    try:
        report = audit(consumer, instance, kafka.topics().all_ingest())
    finally:
        consumer.close()
    assert report and all(row.unaccounted == 0 for row in report), report


def assert_no_duplicate_chunks(es, alias: str, doc_id: str) -> None:
    hits = es.search(
        index=alias, query={"term": {"doc_id": doc_id}}, size=1000, source=["chunk_id"]
    )
    ids = [h["_source"]["chunk_id"] for h in hits["hits"]["hits"]]
    assert ids and len(ids) == len(set(ids))


def _run_status_context(
    name: str,
    instance: DagsterInstance,
    result: ExecuteInProcessResult,
    status: DagsterEventType,
    kafka_ns: KafkaResource,
):  # type: ignore[no-untyped-def]
    event = next(e for e in result.all_events if e.event_type is status)
    return build_run_status_sensor_context(
        sensor_name=name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        dagster_event=event,
        resources={"kafka": kafka_ns},
    )


def failure_sensor_on(
    instance: DagsterInstance, result: ExecuteInProcessResult, kafka_ns: KafkaResource
) -> RunRequest | None:
    """One evaluation of ``dead_letter_on_failure`` for the failed run ``result``."""
    with _run_status_context(
        "dead_letter_on_failure", instance, result, DagsterEventType.RUN_FAILURE, kafka_ns
    ) as context:
        return dead_letter_on_failure(context.for_run_failure())


def outcome_sensor_on(
    instance: DagsterInstance, result: ExecuteInProcessResult, kafka_ns: KafkaResource
) -> None:
    """One evaluation of ``audit_run_outcomes`` for the successful run ``result``."""
    with _run_status_context(
        "audit_run_outcomes", instance, result, DagsterEventType.RUN_SUCCESS, kafka_ns
    ) as context:
        audit_run_outcomes(context)

"""The exporter's bounded scrape on the real broker: the incremental audit gives the rows a full
audit gives while looking up only what may still change, and the letter log reads each dead
letter once and forgets what retention deleted."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from kb_platform.contracts import Modality
from kb_platform.defs.ingestion.kafka_sensor import source_tags
from kb_platform.kafka import ledger
from kb_platform.kafka.audit import IncrementalAudit, PartitionAudit, audit
from kb_platform.kafka.dead_letters import DeadLetter, publish
from kb_platform.kafka.ingest_reader import READER_CONFIG, partition_key
from kb_platform.kafka.ledger import MessageState, source_key
from kb_platform.observability.letter_log import LetterLog
from kb_platform.resources.kafka import KafkaResource
from kb_platform_tests.integration.kafka_helpers import produce, wait_for_group_coordinator


def _run(instance: DagsterInstance, topic: str, offset: int, status: DagsterRunStatus) -> None:
    create_run_for_test(
        instance,
        job_name="process_documents",
        status=status,
        tags=source_tags(topic, 0, offset, f"doc-{offset}"),
    )


def _row(rows: list[PartitionAudit], topic: str) -> PartitionAudit:
    (row,) = [r for r in rows if r.topic == topic]  # the other ingest topics are empty
    return row


def test_incremental_audit_matches_the_full_audit_and_revisits_only_what_can_move(
    text_topic: tuple[KafkaResource, str],
) -> None:
    scoped, topic = text_topic
    produce(scoped, topic, [b"{}"] * 6)
    topics = scoped.topics().all_ingest()
    consumer = scoped.consumer(scoped.consumer_group)
    wait_for_group_coordinator(consumer, topic)
    with DagsterInstance.ephemeral() as instance:
        incremental = IncrementalAudit(instance)

        def both() -> int:
            """Both audits agree; returns how many offsets the incremental one looked up."""
            rows = incremental.audit(consumer, topics)
            assert rows == audit(consumer, instance, topics)
            return incremental.classified

        try:
            assert both() == 6  # nothing known yet: every offset (all unread)

            ledger.record_read_positions(instance, {partition_key(topic, 0): 6})
            _run(instance, topic, 0, DagsterRunStatus.SUCCESS)
            _run(instance, topic, 1, DagsterRunStatus.SUCCESS)
            _run(instance, topic, 2, DagsterRunStatus.FAILURE)  # not dead-lettered yet
            ledger.record(instance, [source_key(topic, 0, 3)], MessageState.DEAD_LETTERED)
            _run(instance, topic, 4, DagsterRunStatus.SUCCESS)
            _run(instance, topic, 5, DagsterRunStatus.STARTED)
            assert both() == 6  # the prefix was empty; 0 and 1 join it now
            assert incremental.state(topic, 0, 1) is MessageState.INDEXED
            assert both() == 4  # offsets 2..5 only: 0 and 1 are indexed for good

            ledger.record(instance, [source_key(topic, 0, 2)], MessageState.DEAD_LETTERED)
            _run(instance, topic, 5, DagsterRunStatus.SUCCESS)
            assert both() == 4  # everything settled now
            row = _row(incremental.audit(consumer, topics), topic)
            assert row.first_unsettled is None
            assert incremental.classified == 2  # the two dead letters, a replay may index them

            _run(instance, topic, 3, DagsterRunStatus.SUCCESS)  # offset 3's replay succeeded
            assert both() == 2
            assert incremental.state(topic, 0, 3) is MessageState.INDEXED
            assert both() == 1  # only offset 2 can still move

            produce(scoped, topic, [b"{}"] * 2)
            assert both() == 1 + 2  # the dead letter and the two new (unread) messages
            row = _row(incremental.audit(consumer, topics), topic)
            assert row.first_unsettled == 6
            assert row.counts == {
                MessageState.INDEXED: 5,
                MessageState.DEAD_LETTERED: 1,
                MessageState.UNREAD: 2,
            }
        finally:
            consumer.close()


def test_letter_log_reads_each_letter_once_and_forgets_deleted_ones(
    text_topic: tuple[KafkaResource, str],
) -> None:
    scoped, topic = text_topic
    dlq = scoped.topics().dlq(Modality.TEXT)
    producer = scoped.producer()

    def letters(offsets: range, error_class: str) -> None:
        publish(
            producer,
            dlq,
            [DeadLetter(b"k", b"{}", topic, 0, o, error_class, "bad") for o in offsets],
            timeout_s=15,
        )

    letters(range(0, 3), "Corrupt")
    log = LetterLog()
    reader = scoped.consumer(f"{scoped.consumer_group}-letters", **READER_CONFIG)
    try:
        held = log.refresh(reader, [dlq])
        assert [letter.source for letter in held] == [(topic, 0, o) for o in range(3)]
        assert {letter.error_class for letter in held} == {"Corrupt"}

        letters(range(3, 5), "Timeout")
        held = log.refresh(reader, [dlq])
        assert [letter.source[2] for letter in held] == [0, 1, 2, 3, 4]  # none read twice
        assert log.refresh(reader, [dlq]) == held

        # Retention deletes the first two letters: they leave the log.
        admin = AdminClient({"bootstrap.servers": scoped.bootstrap_servers})
        for future in admin.delete_records([TopicPartition(dlq, 0, 2)]).values():
            future.result(timeout=30)
        held = log.refresh(reader, [dlq])
        assert [letter.source[2] for letter in held] == [2, 3, 4]
        assert [letter.error_class for letter in held] == ["Corrupt", "Timeout", "Timeout"]
    finally:
        reader.close()

"""``kafka_ingest_sensor``: ingest messages become one processing run per document.

Each tick reads a bounded batch from the cursor's offsets (none while ``max_queued_runs`` runs
already wait in the run queue, fewer when the queue has less room: a backlog stays on Kafka,
where consumer lag counts it, and a lone message still starts its run at once), admits each
message's content (stored under its doc_id), and returns the run requests, the new dynamic
partitions and the advanced cursor in one ``SensorResult``, so they move together. A message
that cannot even be parsed goes to ``dlq.general``, one whose content is refused to
``dlq.<modality>.processing``: nothing is skipped silently. What was admitted or dead-lettered
goes to the audit trail. A re-read message (``topic:partition:offset``) that already has a
run or a dead letter, from this code location or another one on the instance, starts none;
and while two code locations run this sensor (a blue/green switch), only the one holding the
ingest lease reads (kb_platform/kafka/ingest_lease.py).
"""

import time
from pathlib import Path

from confluent_kafka import Message
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from kb_platform.contracts import IngestMessage, Modality
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.errors import InvalidMessage, KbError
from kb_platform.intake import admit
from kb_platform.kafka import audit_trail, ingest_lease, ledger
from kb_platform.kafka.audit_trail import AuditRecord, Event, request_id_of, sender_of
from kb_platform.kafka.dead_letters import DeadLetter, publish
from kb_platform.kafka.ingest_reader import (
    READER_CONFIG,
    IngestCursor,
    partition_key,
    read_batch,
    start_positions,
    topic_partitions,
)
from kb_platform.kafka.ledger import MessageState, source_key
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.processing import ProcessingResource
from kb_platform.structured_logs import REQUEST_ID_TAG

JOB_NAME = "process_documents"
DLQ_PUBLISH_TIMEOUT_S = 15.0


def queued_runs(instance: DagsterInstance) -> int:
    """Runs of the processing job that wait to start (created, queued)."""
    return instance.get_runs_count(
        RunsFilter(
            job_name=JOB_NAME, statuses=[DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED]
        )
    )


def source_tags(
    topic: str, partition: int, offset: int, doc_id: str, request_id: str | None = None
) -> dict[str, str]:
    """A processing run's tags: the ingest message it is for, its document and the request id
    its logs and service calls carry (the message's own ``topic:partition:offset`` by default)."""
    source = f"{topic}:{partition}:{offset}"
    return {
        "kb/source": source,
        "kb/source-topic": topic,
        "kb/source-partition": str(partition),
        "kb/source-offset": str(offset),
        "kb/doc_id": doc_id,
        REQUEST_ID_TAG: request_id or source,
    }


@sensor(
    job_name=JOB_NAME,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=1,  # the sensor daemon evaluates every ~5 s at most anyway
    description="Turns messages on kb.ingest.* into processing runs (one per document).",
)
def kafka_ingest_sensor(
    context: SensorEvaluationContext,
    kafka: KafkaResource,
    blob_store: BlobStore,
    processing: ProcessingResource,
) -> SensorResult | SkipReason:
    holder = ingest_lease.holder_of(context)
    lease = ingest_lease.acquire(context.instance, holder)
    if lease.holder != holder:
        return SkipReason(
            f"code location {lease.holder} reads the ingest topics "
            f"(its lease ends in {lease.until - time.time():.0f} s unless renewed)"
        )
    queued = queued_runs(context.instance)
    room = processing.max_queued_runs - queued
    if room <= 0:
        return SkipReason(f"{queued} runs queued: new messages wait on Kafka until they start")
    topics = kafka.topics()
    cursor = IngestCursor.from_json(context.cursor)
    consumer = kafka.consumer(kafka.consumer_group, **READER_CONFIG)
    try:
        partitions = topic_partitions(consumer, topics.all_ingest())
        positions = start_positions(consumer, partitions, cursor)
        messages = read_batch(
            consumer,
            positions,
            min(kafka.max_batch, room),
            kafka.poll_timeout_s,
            kafka.idle_wait_s,
        )
    finally:
        consumer.close()

    allowed_roots = [Path(root) for root in processing.allowed_roots]
    run_requests: list[RunRequest] = []
    new_doc_ids: list[str] = []
    dead: dict[str, list[DeadLetter]] = {}
    trail: list[AuditRecord] = []
    blocked: set[str] = set()  # partitions stopped at a transient error, retried next tick

    def refuse(msg: Message, dlq: str, exc: KbError, parsed: IngestMessage | None) -> None:
        """Dead-letters a message refused at intake (it gets no doc_id), with its audit record."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        request_id = request_id_of(msg)
        dead.setdefault(dlq, []).append(
            DeadLetter(
                msg.key(),
                msg.value(),
                topic,
                partition,
                offset,
                exc.error_class,
                str(exc),
                request_id=request_id,
            )
        )
        trail.append(
            AuditRecord(
                Event.DEAD_LETTERED,
                "",
                source_key(topic, partition, offset),
                sender=sender_of(msg, parsed),
                source_id=parsed.source_id if parsed else "",
                detail=exc.error_class,
                request_id=request_id,
            )
        )

    # Re-read messages (a tick that failed after its runs were made, a deployment whose cursor
    # starts at the committed offset) already have their run or dead letter.
    done = ledger.requested(
        context.instance, [source_key(m.topic(), m.partition(), m.offset()) for m in messages]
    )
    for msg in messages:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        where = partition_key(topic, partition)
        if where in blocked:
            continue
        if source_key(topic, partition, offset) in done:
            cursor.next_offsets[where] = offset + 1
            continue
        declared = topics.modality_of_ingest(topic)
        source = source_key(topic, partition, offset)
        try:
            message = IngestMessage.parse(msg.value() or b"")
        except InvalidMessage as exc:
            refuse(msg, topics.dlq(None), exc, None)
        else:
            try:
                doc_id = admit(
                    message,
                    blob_store,
                    allowed_roots=allowed_roots,
                    max_bytes=processing.max_bytes,
                )
            except KbError as exc:
                if exc.retryable:
                    context.log.warning("%s:%d held back: %s", where, offset, exc)
                    blocked.add(where)
                    continue
                refuse(msg, topics.dlq(declared or Modality(message.modality)), exc, message)
            else:
                new_doc_ids.append(doc_id)
                request_id = request_id_of(msg)
                trail.append(
                    AuditRecord(
                        Event.ADMITTED,
                        doc_id,
                        source,
                        sender=sender_of(msg, message),
                        source_id=message.source_id,
                        request_id=request_id,
                    )
                )
                run_requests.append(
                    RunRequest(
                        run_key=f"{topic}:{partition}:{offset}",
                        partition_key=doc_id,
                        tags={
                            **source_tags(topic, partition, offset, doc_id, request_id),
                            **processing.run_tags(declared or Modality(message.modality)),
                        },
                    )
                )
        cursor.next_offsets[where] = offset + 1

    if trail:  # every message admitted or refused has its record (and each refused a letter)
        # The cursor moves only if the broker confirmed every dead letter and audit record:
        # otherwise this tick fails, and the next one reads the same messages again (run keys
        # prevent second runs).
        producer = kafka.producer()
        for dlq_topic, letters in dead.items():
            publish(producer, dlq_topic, letters, DLQ_PUBLISH_TIMEOUT_S)
            ledger.record(
                context.instance,
                [source_key(d.source_topic, d.source_partition, d.source_offset) for d in letters],
                MessageState.DEAD_LETTERED,
            )
        audit_trail.write(producer, topics.audit, trail)
    for topic_partition in positions:  # partitions with nothing new still get a cursor entry
        key = partition_key(topic_partition.topic, topic_partition.partition)
        if topic_partition.offset >= 0:
            cursor.next_offsets.setdefault(key, topic_partition.offset)

    ledger.record_read_positions(context.instance, cursor.next_offsets)
    known = set(context.instance.get_dynamic_partitions(documents_partitions.name))
    additions = sorted(set(new_doc_ids) - known)
    context.log.info(
        "%d messages (%d requested before): %d runs, %d dead letters, %d new documents",
        len(messages),
        len(done),
        len(run_requests),
        sum(len(v) for v in dead.values()),
        len(additions),
    )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[documents_partitions.build_add_request(additions)]
        if additions
        else [],
        cursor=cursor.to_json(),
    )

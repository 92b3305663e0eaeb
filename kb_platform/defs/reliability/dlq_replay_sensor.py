"""``dlq_replay``: dead-lettered documents are tried again with exponential backoff per attempt;
after ``max_attempts`` they are parked (settled, counted by the audit) instead.

Only ``dlq.<modality>.processing`` is replayed: what is in ``dlq.general`` could not even be
parsed, and trying it again cannot help. Only the code location holding the ingest lease
replays (during a blue/green switch both run this sensor, each with its own cursor), and a
letter whose replay run or parking exists already, made by either, or whose message has been
indexed since, is passed over.
"""

import time

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

from kb_platform.contracts import Modality
from kb_platform.defs.ingestion.kafka_sensor import source_tags
from kb_platform.kafka import audit_trail, ingest_lease, ledger
from kb_platform.kafka.audit_trail import AuditRecord, Event
from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.kafka.ingest_reader import (
    READER_CONFIG,
    IngestCursor,
    partition_key,
    read_batch,
    start_positions,
    topic_partitions,
)
from kb_platform.kafka.ledger import MessageState
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import JOB
from kb_platform.structured_logs import valid_request_id

MAX_ATTEMPTS = 4
BASE_DELAY_S = 60.0
MAX_DELAY_S = 3600.0


def replay_delay_s(attempts: int, base_s: float = BASE_DELAY_S) -> float:
    """Wait after the ``attempts``-th failure: base, 2 x base, 4 x base, ... up to an hour."""
    return min(base_s * 2 ** max(attempts - 1, 0), MAX_DELAY_S)


def handled(instance: DagsterInstance, source: str, attempts: int) -> bool:
    """Whether the letter of ``source``'s ``attempts``-th failure was replayed or parked already
    (by this code location before its cursor was lost, or by another one), or its message has
    been indexed since it was written (a retry that was made after all): a replay then would
    only process the document twice."""
    if ledger.markers(instance, [source]).get(source) is MessageState.PARKED:
        return True
    replay = RunsFilter(tags={"kb/source": source, "kb/attempt": str(attempts + 1)})
    indexed = RunsFilter(tags={"kb/source": source}, statuses=[DagsterRunStatus.SUCCESS])
    return bool(instance.get_runs(replay, limit=1) or instance.get_runs(indexed, limit=1))


@sensor(
    job_name=JOB,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Replays dead-lettered documents with backoff; parks them after the last try.",
)
def dlq_replay(context: SensorEvaluationContext, kafka: KafkaResource) -> SensorResult | SkipReason:
    holder = ingest_lease.holder_of(context)
    if not ingest_lease.holds(context.instance, holder):
        return SkipReason(f"{holder} does not hold the ingest lease: the holder replays")
    topics = kafka.topics()
    cursor = IngestCursor.from_json(context.cursor)
    consumer = kafka.consumer(f"{kafka.consumer_group}-replay", **READER_CONFIG)
    try:
        partitions = topic_partitions(consumer, [topics.dlq(m) for m in Modality])
        positions = start_positions(consumer, partitions, cursor)
        letters = read_batch(consumer, positions, kafka.max_batch, kafka.poll_timeout_s)
    finally:
        consumer.close()

    requests, parked, waiting = [], [], set()
    trail: list[AuditRecord] = []
    now = time.time()
    for letter in letters:
        where = partition_key(letter.topic(), letter.partition())
        if where in waiting:
            continue
        headers = headers_dict(letter.headers())
        attempts = int(headers.get("attempts", "1"))
        source = (
            f"{headers['source-topic']}:{headers['source-partition']}:{headers['source-offset']}"
        )
        doc_id = headers.get("doc-id", "")
        request_id = valid_request_id(headers.get("request-id")) or ""
        if not doc_id:
            pass  # refused at intake: the same content would be refused again; stays dead-lettered
        elif handled(context.instance, source, attempts):
            pass
        elif attempts >= MAX_ATTEMPTS:
            parked.append(source)
            trail.append(
                AuditRecord(
                    Event.PARKED,
                    doc_id,
                    source,
                    detail=f"after {attempts} attempts",
                    request_id=request_id,
                )
            )
        else:
            _, published_ms = letter.timestamp()
            if now < published_ms / 1000 + replay_delay_s(attempts):
                waiting.add(where)  # letters are in time order: the rest of this partition waits
                continue
            requests.append(
                RunRequest(
                    run_key=f"replay:{source}:{attempts + 1}",
                    partition_key=doc_id,
                    tags={
                        **source_tags(
                            headers["source-topic"],
                            int(headers["source-partition"]),
                            int(headers["source-offset"]),
                            doc_id,
                            request_id,
                        ),
                        "kb/attempt": str(attempts + 1),
                        "kb/replay-of": headers.get("run-id", ""),
                    },
                )
            )
            trail.append(
                AuditRecord(
                    Event.REPLAYED,
                    doc_id,
                    source,
                    detail=f"attempt {attempts + 1}",
                    request_id=request_id,
                )
            )
        cursor.next_offsets[where] = letter.offset() + 1
    if trail:
        audit_trail.write(kafka.producer(), topics.audit, trail)
    ledger.record(context.instance, parked, MessageState.PARKED)
    context.log.info(
        "%d dead letters: %d replayed, %d parked", len(letters), len(requests), len(parked)
    )
    return SensorResult(run_requests=requests, cursor=cursor.to_json())

"""``dead_letter_on_failure``: a document run that failed for the last time sends its original
message to ``dlq.<modality>.processing`` with why, and settles its offset in the ledger.

A run that failed because a service stayed down past its steps' retries is no dead letter:
the document is requested again (a new run with the same source tags, so the ledger keeps the
message in flight and consumer lag shows the outage) until the service is back.
"""

from datetime import UTC, datetime

from dagster import (
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    run_failure_sensor,
)

from kb_platform.contracts import Modality
from kb_platform.defs.processing import process_documents
from kb_platform.kafka import audit_trail, ledger
from kb_platform.kafka.audit_trail import AuditRecord, Event
from kb_platform.kafka.dead_letters import DeadLetter, publish
from kb_platform.kafka.ingest_reader import fetch_message
from kb_platform.kafka.ledger import SETTLED_RUN_TAG, MessageState, source_key
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import JOB, failed_for_an_outage, failure_details
from kb_platform.structured_logs import REQUEST_ID_TAG

PUBLISH_TIMEOUT_S = 15.0
OUTAGE_RETRY_TAG = "kb/outage-retry"
# Tags of a failed run that a new run for the same message must not inherit.
_NOT_INHERITED = {"kb/run-worker", SETTLED_RUN_TAG, OUTAGE_RETRY_TAG}


def _first_failed_at(context: RunFailureSensorContext) -> str:
    root = context.dagster_run.tags.get("dagster/root_run_id", context.dagster_run.run_id)
    stats = context.instance.get_run_stats(root)
    when = stats.end_time or datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(when, UTC).isoformat()


@run_failure_sensor(
    monitored_jobs=None,
    default_status=DefaultSensorStatus.RUNNING,
    request_job=process_documents,
    minimum_interval_seconds=15,
    description=(
        "Publishes the original message of a finally failed document run to its DLQ; "
        "requests the document again when a service outage outlasted the step retries."
    ),
)
def dead_letter_on_failure(
    context: RunFailureSensorContext, kafka: KafkaResource
) -> RunRequest | None:
    # Read the run afresh: its dead-lettered tag may be newer than this evaluation's copy.
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    tags = run.tags
    if run.job_name != JOB or "kb/source-topic" not in tags:
        return None  # not a Kafka-sourced document run (e.g. `kb-platform ingest`)
    if tags.get("dagster/will_retry") == "true" or tags.get(SETTLED_RUN_TAG) == "true":
        return None  # another attempt follows, or this failure was dead-lettered already
    if failed_for_an_outage(context.instance, run.run_id):
        return _request_again(context, run)
    topic, partition, offset = (
        tags["kb/source-topic"],
        int(tags["kb/source-partition"]),
        int(tags["kb/source-offset"]),
    )
    consumer = kafka.consumer(f"{kafka.consumer_group}-dlq")
    try:
        original = fetch_message(consumer, topic, partition, offset)
    finally:
        consumer.close()
    if original is None:
        raise RuntimeError(f"{topic}:{partition}:{offset} can no longer be read to dead-letter it")
    error_class, error_message = failure_details(context.instance, run.run_id) or (
        "RunFailure",
        context.failure_event.message or "",
    )
    topics = kafka.topics()
    letter = DeadLetter(
        key=original.key(),
        value=original.value(),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        error_class=error_class,
        error_message=error_message,
        doc_id=tags.get("kb/doc_id", ""),
        run_id=run.run_id,
        attempts=int(tags.get("kb/attempt", "1")) + int(tags.get("dagster/retry_number", "0")),
        first_failed_at=_first_failed_at(context),
        request_id=tags.get(REQUEST_ID_TAG, ""),
    )
    producer = kafka.producer()
    publish(
        producer,
        topics.dlq(topics.modality_of_ingest(topic) or Modality.DOCUMENT),
        [letter],
        PUBLISH_TIMEOUT_S,
    )
    audit_trail.write(
        producer,
        topics.audit,
        [
            AuditRecord(
                Event.DEAD_LETTERED,
                letter.doc_id,
                source_key(topic, partition, offset),
                run_id=run.run_id,
                detail=f"{error_class} after {letter.attempts} attempt(s)",
                request_id=letter.request_id,
            )
        ],
    )
    # Marked after the broker confirmed the letter: a restart in between publishes it again
    # (at least once; the run-id header tells duplicates apart), never not at all.
    context.instance.add_run_tags(run.run_id, {SETTLED_RUN_TAG: "true"})
    ledger.record(
        context.instance, [source_key(topic, partition, offset)], MessageState.DEAD_LETTERED
    )
    context.log.info("dead-lettered %s:%d:%d (%s)", topic, partition, offset, error_class)
    return None


def _request_again(context: RunFailureSensorContext, run: DagsterRun) -> RunRequest:
    """A new run for the failed run's message; its run key makes a second evaluation of the
    same failure (a restarted daemon) request nothing more."""
    retry = int(run.tags.get(OUTAGE_RETRY_TAG, "0")) + 1
    context.log.warning(
        "%s failed on a service outage past its step retries; requesting it again (#%d)",
        run.tags["kb/source"],
        retry,
    )
    tags = {
        key: value
        for key, value in run.tags.items()
        if (key.startswith("kb/") and key not in _NOT_INHERITED) or key == "dagster/max_runtime"
    }
    return RunRequest(
        run_key=f"{run.run_id}:after-outage",
        partition_key=run.tags["dagster/partition"],
        tags={**tags, OUTAGE_RETRY_TAG: str(retry)},
    )

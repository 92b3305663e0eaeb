"""``dead_letter_on_failure``: a document run that failed for the last time sends its original
message to ``dlq.<modality>.processing`` with why, and settles its offset in the ledger."""

from datetime import UTC, datetime

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from kb_platform.contracts import Modality
from kb_platform.kafka import ledger
from kb_platform.kafka.dead_letters import DeadLetter, publish
from kb_platform.kafka.ingest_reader import fetch_message
from kb_platform.kafka.ledger import SETTLED_RUN_TAG, MessageState, source_key
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import JOB, failure_details

PUBLISH_TIMEOUT_S = 15.0


def _first_failed_at(context: RunFailureSensorContext) -> str:
    root = context.dagster_run.tags.get("dagster/root_run_id", context.dagster_run.run_id)
    stats = context.instance.get_run_stats(root)
    when = stats.end_time or datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(when, UTC).isoformat()


@run_failure_sensor(
    monitored_jobs=None,
    default_status=DefaultSensorStatus.RUNNING,
    request_job=None,
    minimum_interval_seconds=15,
    description="Publishes the original message of a finally failed document run to its DLQ.",
)
def dead_letter_on_failure(context: RunFailureSensorContext, kafka: KafkaResource) -> None:
    # Read the run afresh: its dead-lettered tag may be newer than this evaluation's copy.
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    tags = run.tags
    if run.job_name != JOB or "kb/source-topic" not in tags:
        return  # not a Kafka-sourced document run (e.g. `kb-platform ingest`)
    if tags.get("dagster/will_retry") == "true" or tags.get(SETTLED_RUN_TAG) == "true":
        return  # another attempt follows, or this failure was dead-lettered already
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
    )
    publish(
        kafka.producer(),
        topics.dlq(topics.modality_of_ingest(topic) or Modality.DOCUMENT),
        [letter],
        PUBLISH_TIMEOUT_S,
    )
    # Marked after the broker confirmed the letter: a restart in between publishes it again
    # (at least once; the run-id header tells duplicates apart), never not at all.
    context.instance.add_run_tags(run.run_id, {SETTLED_RUN_TAG: "true"})
    ledger.record(
        context.instance, [source_key(topic, partition, offset)], MessageState.DEAD_LETTERED
    )
    context.log.info("dead-lettered %s:%d:%d (%s)", topic, partition, offset, error_class)

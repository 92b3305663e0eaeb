"""What becomes of a document run that failed for the last time: its message is dead-lettered
(``dlq.<modality>.processing``, with why, settled in the ledger), or the document is requested
again. One implementation for the run-failure sensor of the run's own code location and for
the sweep that adopts failures nobody settled (orphaned_runs_sensor.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRun, RunRequest, RunsFilter
from dagster._core.events import RunFailureReason
from dagster._core.execution.retries import auto_reexecution_should_retry_run

from kb_platform.contracts import Modality
from kb_platform.kafka import audit_trail, ledger
from kb_platform.kafka.audit_trail import AuditRecord, Event
from kb_platform.kafka.dead_letters import DeadLetter, publish
from kb_platform.kafka.ingest_reader import fetch_message
from kb_platform.kafka.ledger import SETTLED_RUN_TAG, MessageState, source_key
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import JOB, failure_details
from kb_platform.structured_logs import REQUEST_ID_TAG

PUBLISH_TIMEOUT_S = 15.0
OUTAGE_RETRY_TAG = "kb/outage-retry"
ADOPTED_FROM_TAG = "kb/adopted-from"  # the failed run a sweep requested its document again for
# Tags of a failed run that a new run for the same message must not inherit.
_NOT_INHERITED = {"kb/run-worker", SETTLED_RUN_TAG, OUTAGE_RETRY_TAG, ADOPTED_FROM_TAG}


def is_document_run(run: DagsterRun) -> bool:
    """A processing run for a Kafka message (not, e.g., one of `kb-platform ingest`)."""
    return run.job_name == JOB and "kb/source-topic" in run.tags


def attempts_of(run: DagsterRun) -> int:
    """Attempts at the run's message so far, this run included (replays and Dagster's retries)."""
    return int(run.tags.get("kb/attempt", "1")) + int(run.tags.get("dagster/retry_number", "0"))


def retries_remain(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether Dagster's run retries (dagster.yaml ``run_retries``) would retry this failure."""
    if not instance.run_retries_enabled:
        return False
    reason = run.tags.get("dagster/failure_reason")
    return auto_reexecution_should_retry_run(
        instance, run, RunFailureReason(reason) if reason else None
    )


def retry_pending(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether Dagster's retry daemon is to retry this failed run. Dagster stores a run's
    failure first and tags ``dagster/will_retry`` a moment later: a sensor that reads the
    failure in between (a restarted daemon's sensors and its run monitoring start together)
    decides as Dagster is about to, instead of taking the failure as final."""
    will_retry = run.tags.get("dagster/will_retry")
    if will_retry is not None:
        return will_retry == "true"
    return retries_remain(instance, run)


def superseded(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether a newer run exists for the same message (a retry, or a request made after this
    run failed): the failure is then someone else's to settle, not this run's."""
    newer = instance.get_runs(RunsFilter(tags={"kb/source": run.tags["kb/source"]}), limit=1)
    return bool(newer) and newer[0].run_id != run.run_id


def _first_failed_at(instance: DagsterInstance, run: DagsterRun) -> str:
    root = run.tags.get("dagster/root_run_id", run.run_id)
    when = instance.get_run_stats(root).end_time or datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(when, UTC).isoformat()


def dead_letter(
    instance: DagsterInstance,
    kafka: KafkaResource,
    run: DagsterRun,
    log: logging.Logger,
    reason: tuple[str, str] | None = None,
) -> None:
    """Publishes the run's original message to its DLQ with the error (``reason``, else the
    failed step's), writes the audit record, then marks the run and the ledger settled."""
    tags = run.tags
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
    error_class, error_message = (
        reason or failure_details(instance, run.run_id) or ("RunFailure", "")
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
        attempts=attempts_of(run),
        first_failed_at=_first_failed_at(instance, run),
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
    instance.add_run_tags(run.run_id, {SETTLED_RUN_TAG: "true"})
    ledger.record(instance, [source_key(topic, partition, offset)], MessageState.DEAD_LETTERED)
    log.info("dead-lettered %s:%d:%d (%s)", topic, partition, offset, error_class)


def request_after_outage(run: DagsterRun, log: logging.Logger) -> RunRequest:
    """A new run for the message of a run whose service outage outlasted its step retries."""
    retry = int(run.tags.get(OUTAGE_RETRY_TAG, "0")) + 1
    log.warning(
        "%s failed on a service outage past its step retries; requesting it again (#%d)",
        run.tags["kb/source"],
        retry,
    )
    return _request_again(run, f"{run.run_id}:after-outage", {OUTAGE_RETRY_TAG: str(retry)})


def request_adopted(run: DagsterRun, log: logging.Logger) -> RunRequest:
    """A new run for the message of a failed run whose retry never came (its code location was
    gone, or the retry daemon could not make it): the attempt Dagster would have made."""
    log.warning(
        "%s: run %s failed and was not retried; requesting its document again",
        run.tags["kb/source"],
        run.run_id,
    )
    return _request_again(
        run,
        f"{run.run_id}:adopted",
        {ADOPTED_FROM_TAG: run.run_id, "kb/attempt": str(attempts_of(run) + 1)},
    )


def _request_again(run: DagsterRun, run_key: str, extra: dict[str, str]) -> RunRequest:
    """Same message, same limits; the run key makes a second evaluation of the same failure (a
    restarted daemon) request nothing more."""
    tags = {
        key: value
        for key, value in run.tags.items()
        if (key.startswith("kb/") and key not in _NOT_INHERITED) or key == "dagster/max_runtime"
    }
    return RunRequest(
        run_key=run_key, partition_key=run.tags["dagster/partition"], tags={**tags, **extra}
    )

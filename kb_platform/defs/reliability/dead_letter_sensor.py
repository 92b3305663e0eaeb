"""``dead_letter_on_failure``: a document run that failed for the last time sends its original
message to ``dlq.<modality>.processing`` with why, and settles its offset in the ledger.

A run that failed because a service stayed down past its steps' retries is no dead letter:
the document is requested again (a new run with the same source tags, so the ledger keeps the
message in flight and consumer lag shows the outage) until the service is back. Failures this
sensor never settles (its code location removed, a retry that could not be made) are adopted
by ``adopt_orphaned_runs``.
"""

from dagster import DefaultSensorStatus, RunFailureSensorContext, RunRequest, run_failure_sensor

from kb_platform.defs.processing import process_documents
from kb_platform.defs.reliability.failed_runs import (
    dead_letter,
    is_document_run,
    request_after_outage,
    retry_pending,
    superseded,
)
from kb_platform.kafka.ledger import SETTLED_RUN_TAG
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import failed_for_an_outage, failure_details


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
    # Read the run afresh: its tags may be newer than this evaluation's copy.
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    if not is_document_run(run):
        return None
    if run.tags.get(SETTLED_RUN_TAG) == "true":
        return None  # dead-lettered already
    if retry_pending(context.instance, run):
        return None  # Dagster retries it (if it cannot, adopt_orphaned_runs settles it)
    if superseded(context.instance, run):
        return None  # adopted meanwhile: its document has a newer run
    if failed_for_an_outage(context.instance, run.run_id):
        return request_after_outage(run, context.log)
    reason = failure_details(context.instance, run.run_id) or (
        "RunFailure",
        context.failure_event.message or "",
    )
    dead_letter(context.instance, kafka, run, context.log, reason)
    return None

"""Launching document runs through a running Dagster (webserver + daemon) and waiting for them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_graphql import DagsterGraphQLClient

from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.errors import is_outage

if TYPE_CHECKING:
    from dagster._core.events import StepFailureData

log = logging.getLogger(__name__)

JOB = "process_documents"
LOCATION = "kb_platform"
REPOSITORY = "__repository__"
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class RunOutcome:
    doc_id: str
    run_id: str
    status: str
    error_class: str | None = None


def register_partitions(instance: DagsterInstance, doc_ids: list[str]) -> None:
    known = set(instance.get_dynamic_partitions(documents_partitions.name))
    new = [d for d in dict.fromkeys(doc_ids) if d not in known]
    if new:
        instance.add_dynamic_partitions(documents_partitions.name, new)


def failed_partitions(instance: DagsterInstance) -> list[str]:
    """Documents whose latest processing run failed (healthy and in-flight ones excluded)."""
    latest: dict[str, DagsterRunStatus] = {}
    for run in instance.get_runs(RunsFilter(job_name=JOB)):  # newest first
        key = run.tags.get("dagster/partition")
        if key and key not in latest:
            latest[key] = run.status
    known = set(instance.get_dynamic_partitions(documents_partitions.name))
    return sorted(
        k for k, status in latest.items() if status is DagsterRunStatus.FAILURE and k in known
    )


def launch(client: DagsterGraphQLClient, doc_id: str, tags: dict[str, str]) -> str:
    return client.submit_job_execution(
        JOB,
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        tags={"dagster/partition": doc_id, "kb/doc_id": doc_id, **tags},
    )


def failure_details(instance: DagsterInstance, run_id: str) -> tuple[str, str] | None:
    """(error class, message) of the run's failed step; our typed errors carry both as
    metadata, anything else gives its exception class and message."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records
    for record in records:
        return step_failure_details(record.event_log_entry.dagster_event.step_failure_data)
    return None


def step_failure_details(data: StepFailureData) -> tuple[str, str]:
    """(error class, message) of one failed step."""
    metadata = data.user_failure_data.metadata if data.user_failure_data else {}
    if "error_class" in metadata:
        return str(metadata["error_class"].value), str(metadata["error_message"].value)
    if data.error:
        return data.error.cls_name or "unknown", data.error.message.strip()
    return "unknown", ""


def failed_for_an_outage(instance: DagsterInstance, run_id: str) -> bool:
    """Whether the run's failed step ran out of retries on an outage (a service down or
    overloaded, the instance database or the disk failing): trying again later can succeed, so
    the document is no dead letter."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records
    for record in records:
        error = record.event_log_entry.dagster_event.step_failure_data.error
        while error is not None:
            if is_outage(error.cls_name, error.message):
                return True
            error = error.cause or error.context
    return False


def failure_class(instance: DagsterInstance, run_id: str) -> str | None:
    details = failure_details(instance, run_id)
    return details[0] if details else None


def run_in_process(instance: DagsterInstance, doc_ids: list[str]) -> list[RunOutcome]:
    """Runs the processing job for each document in this process, one after another.

    For a local batch: models and libraries load once rather than once per run process. Each
    run is recorded in the instance (and shows in the UI) like a launched one; a failing
    document fails its own run only.
    """
    from kb_platform.definitions import defs

    job = defs.resolve_job_def(JOB)
    outcomes = []
    for number, doc_id in enumerate(doc_ids, start=1):
        result = job.execute_in_process(
            instance=instance,
            partition_key=doc_id,
            tags={"kb/doc_id": doc_id, "kb/launched_by": "ingest --in-process"},
            raise_on_error=False,
            # Step logs go to the run's event log (the UI); the terminal gets warnings only.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        status = DagsterRunStatus.SUCCESS if result.success else DagsterRunStatus.FAILURE
        error = None if result.success else failure_class(instance, result.run_id)
        outcomes.append(RunOutcome(doc_id, result.run_id, status.value, error))
        log.info("%d/%d %s: %s", number, len(doc_ids), doc_id, error or status.value)
    return outcomes


def wait_for(
    instance: DagsterInstance, runs: dict[str, str], timeout_s: float, poll_s: float = 2.0
) -> list[RunOutcome]:
    """Waits until every run (doc_id -> run_id) ends or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    outcomes: dict[str, RunOutcome] = {}
    while len(outcomes) < len(runs) and time.monotonic() < deadline:
        for doc_id, run_id in runs.items():
            if doc_id in outcomes:
                continue
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status in TERMINAL:
                error = (
                    failure_class(instance, run_id)
                    if run.status is not DagsterRunStatus.SUCCESS
                    else None
                )
                outcomes[doc_id] = RunOutcome(doc_id, run_id, run.status.value, error)
        time.sleep(poll_s)
    for doc_id, run_id in runs.items():
        outcomes.setdefault(doc_id, RunOutcome(doc_id, run_id, "UNFINISHED"))
    return list(outcomes.values())

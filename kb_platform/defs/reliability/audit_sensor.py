"""``audit_run_outcomes``: a document run that succeeded goes to the audit trail as indexed, a
``delete_documents`` run as its documents deleted (the other events are written where they
happen: the ingest, dead-letter and replay sensors)."""

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunStatusSensorContext,
    run_status_sensor,
)

from kb_platform.defs.processing import process_documents
from kb_platform.defs.search.delete_documents import delete_documents
from kb_platform.kafka import audit_trail
from kb_platform.kafka.audit_trail import AuditRecord, Event
from kb_platform.resources.kafka import KafkaResource
from kb_platform.structured_logs import REQUEST_ID_TAG


def outcome_records(run: DagsterRun) -> list[AuditRecord]:
    if run.job_name == delete_documents.name:
        config = run.run_config.get("ops", {}).get("delete_document_chunks", {}).get("config", {})
        return [
            AuditRecord(Event.DELETED, doc_id, "", run_id=run.run_id)
            for doc_id in config.get("doc_ids", [])
        ]
    doc_id = run.tags.get("kb/doc_id") or run.tags.get("dagster/partition", "")
    return [
        AuditRecord(
            Event.INDEXED,
            doc_id,
            run.tags.get("kb/source", ""),
            run_id=run.run_id,
            request_id=run.tags.get(REQUEST_ID_TAG, ""),
        )
    ]


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[process_documents, delete_documents],
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Records indexed and deleted documents in the ingestion audit trail.",
)
def audit_run_outcomes(context: RunStatusSensorContext, kafka: KafkaResource) -> None:
    audit_trail.write(kafka.producer(), kafka.topics().audit, outcome_records(context.dagster_run))

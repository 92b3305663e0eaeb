"""``delete_documents``: a document's chunks out of every index version, its partition removed."""

from dagster import Config, OpExecutionContext, job, op

from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.index.writer import delete_document
from kb_platform.resources.elasticsearch import ElasticsearchResource


class DeleteDocumentsConfig(Config):
    doc_ids: list[str]


@op(description="Deletes the documents' chunks from all kb-chunks versions, then their partitions.")
def delete_document_chunks(
    context: OpExecutionContext, config: DeleteDocumentsConfig, elasticsearch: ElasticsearchResource
) -> None:
    pattern = f"{elasticsearch.names.prefix}*"
    for doc_id in config.doc_ids:
        report = delete_document(elasticsearch.client, pattern, doc_id)
        if not report.ok:
            raise RuntimeError(f"chunks of {doc_id} not all deleted: {report.failed[:5]}")
        # The partition goes last: a failure above leaves it visible, so the delete can be rerun.
        if context.instance.has_dynamic_partition(documents_partitions.name, doc_id):
            context.instance.delete_dynamic_partition(documents_partitions.name, doc_id)
        context.log.info("deleted %s: %d chunks", doc_id, report.succeeded)


@job(description="Delete documents from the knowledge base (index and partitions).")
def delete_documents() -> None:
    delete_document_chunks()

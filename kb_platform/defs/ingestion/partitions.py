from dagster import DynamicPartitionsDefinition

# One partition per document, keyed by doc_id (the first 16 hex digits of its sha256).
documents_partitions = DynamicPartitionsDefinition(name="documents")

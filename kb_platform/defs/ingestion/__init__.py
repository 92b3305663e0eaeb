"""Documents in: dynamic partitions by doc_id and the stored originals."""

from dagster import Definitions

from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.defs.ingestion.raw_documents import raw_documents

defs = Definitions(assets=[raw_documents], sensors=[kafka_ingest_sensor])

__all__ = ["defs", "documents_partitions", "kafka_ingest_sensor", "raw_documents"]

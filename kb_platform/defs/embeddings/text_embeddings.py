"""``text_embeddings``: every chunk with its MiniLM vector, stored as Parquet per document."""

import pyarrow as pa
from dagster import AssetExecutionContext, Output, asset

from kb_platform.contracts import Chunk
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.index.analysis import embedding_input
from kb_platform.index.documents import embeddings_table
from kb_platform.models.registry import text_encoder


@asset(
    partitions_def=documents_partitions,
    group_name="embeddings",
    kinds={"pytorch", "parquet"},
    io_manager_key="parquet_io_manager",
    description="Chunks with their 384-d all-MiniLM-L6-v2 vectors (unit length), one row each.",
)
def text_embeddings(context: AssetExecutionContext, text_chunks: list[Chunk]) -> Output[pa.Table]:
    encoder = text_encoder()
    vectors = encoder.encode([embedding_input(chunk.title, chunk.text) for chunk in text_chunks])
    table = embeddings_table(text_chunks, vectors, encoder.version)
    return Output(table, metadata={"chunks": table.num_rows, "model": encoder.version})

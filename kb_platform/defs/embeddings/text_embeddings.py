"""``text_embeddings``: every chunk with its MiniLM vector, stored as Parquet per document."""

import pyarrow as pa
from dagster import AssetExecutionContext, Output, asset

from kb_platform.contracts import Chunk
from kb_platform.defs.failures import MODEL_SERVICE_RETRY
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.index.analysis import embedding_input
from kb_platform.index.documents import embeddings_table
from kb_platform.resources.text_encoder import TextEncoderResource


@asset(
    partitions_def=documents_partitions,
    group_name="embeddings",
    kinds={"pytorch", "parquet"},
    io_manager_key="parquet_io_manager",
    retry_policy=MODEL_SERVICE_RETRY,  # the encoder service down or warming: back off, heal
    description="Chunks with their 384-d all-MiniLM-L6-v2 vectors (unit length), one row each; "
    "from the warm encoder service when one is configured, else in the run process.",
)
def text_embeddings(
    context: AssetExecutionContext, text_chunks: list[Chunk], text_encoder: TextEncoderResource
) -> Output[pa.Table]:
    embedded = text_encoder.embed([embedding_input(c.title, c.text) for c in text_chunks])
    table = embeddings_table(text_chunks, embedded.vectors, embedded.model)
    return Output(
        table,
        metadata={
            "chunks": table.num_rows,
            "model": embedded.model,
            "encoder": text_encoder.service_url or "in process",
        },
    )

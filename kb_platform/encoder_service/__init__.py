"""The warm model service for ingestion: MiniLM text embeddings behind BentoML (bentos/encoder),
its settings, runtime, front door and the client the Dagster resources call."""

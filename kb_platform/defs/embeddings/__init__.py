"""Chunks to vectors: text embeddings (CLIP image embeddings join here later)."""

from dagster import Definitions

from kb_platform.defs.embeddings.text_embeddings import text_embeddings

defs = Definitions(assets=[text_embeddings])

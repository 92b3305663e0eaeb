"""Chunks and images to vectors: MiniLM text embeddings and CLIP image (and chunk) embeddings."""

from dagster import Definitions

from kb_platform.defs.embeddings.image_embeddings import image_embeddings
from kb_platform.defs.embeddings.text_embeddings import text_embeddings

defs = Definitions(assets=[text_embeddings, image_embeddings])

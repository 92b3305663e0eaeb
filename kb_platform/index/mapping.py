"""Index names, aliases and the mapping of a chunk document (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEXT_DIMS = 384
CLIP_DIMS = 512


@dataclass(frozen=True)
class IndexNames:
    """Names of one chunk index family: ``<base>-v<N>`` indices, ``<base>`` read alias,
    ``<base>-write`` write alias, ``<base>`` index template."""

    base: str = "kb-chunks"

    @property
    def prefix(self) -> str:
        return f"{self.base}-v"

    @property
    def read_alias(self) -> str:
        return self.base

    @property
    def write_alias(self) -> str:
        return f"{self.base}-write"

    @property
    def template(self) -> str:
        return self.base

    def index(self, version: int) -> str:
        return f"{self.prefix}{version}"

    def version_of(self, index: str) -> int:
        if not index.startswith(self.prefix):
            raise ValueError(f"{index} is not a {self.base} index")
        return int(index.removeprefix(self.prefix))


DEFAULT_NAMES = IndexNames()
READ_ALIAS = DEFAULT_NAMES.read_alias
WRITE_ALIAS = DEFAULT_NAMES.write_alias


def chunk_mappings(text_dims: int = TEXT_DIMS, clip_dims: int = CLIP_DIMS) -> dict[str, Any]:
    def vector(dims: int) -> dict[str, Any]:
        return {
            "type": "dense_vector",
            "dims": dims,
            "index": True,
            "similarity": "cosine",
            "index_options": {"type": "int8_hnsw"},
        }

    return {
        "dynamic": "strict",
        # The vectors and the analysed text are indexed but not kept in _source: every hit's
        # fetch would parse ~900 floats of JSON it never returns (benchmarks/serving.py). The
        # index is rebuilt from the stored tables, never reindexed from itself.
        "_source": {"excludes": ["text_vector", "clip_vector", "search_text"]},
        "properties": {
            "chunk_id": {"type": "keyword"},
            "doc_id": {"type": "keyword"},
            "modality": {"type": "keyword"},
            "text": {"type": "text"},
            # analyzed in our code (kb_platform.index.analysis): stemmed title + text, for BM25
            "search_text": {"type": "text", "analyzer": "whitespace"},
            "title": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
            "source_uri": {"type": "keyword", "ignore_above": 4096},
            "page": {"type": "integer"},
            "char_start": {"type": "integer"},
            "char_end": {"type": "integer"},
            "start_s": {"type": "float"},
            "end_s": {"type": "float"},
            "kind": {"type": "keyword"},  # "text" (a chunk) or "image" (a page render, figure)
            "image_key": {"type": "keyword"},
            "embedding_model": {"type": "keyword"},
            "clip_model": {"type": "keyword"},
            "text_vector": vector(text_dims),
            "clip_vector": vector(clip_dims),
        },
    }


def index_template(names: IndexNames, replicas: int = 0, shards: int = 1) -> dict[str, Any]:
    """Applies to every ``<base>-v*`` index, so a new version gets the same mapping."""
    return {
        "index_patterns": [f"{names.prefix}*"],
        "priority": 100,
        "template": {
            "settings": {"number_of_shards": shards, "number_of_replicas": replicas},
            "mappings": chunk_mappings(),
        },
        "_meta": {"owner": "kb-platform", "description": "chunks with text and CLIP vectors"},
    }

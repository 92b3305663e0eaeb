"""Materialize the document assets in-process on real files, with real local resources."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    FilesystemIOManager,
    materialize,
)
from elasticsearch import ConnectionError

from kb_platform.config import Settings, get_settings
from kb_platform.contracts import IngestMessage, Modality
from kb_platform.defs.embeddings import image_embeddings, text_embeddings
from kb_platform.defs.ingestion import documents_partitions, raw_documents
from kb_platform.defs.processing import defs as processing_defs
from kb_platform.defs.search.search_index import search_index, search_index_matches_stored_chunks
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.intake import admit
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.clip_encoder import ClipEncoderResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform.resources.text_encoder import TextEncoderResource

ASSETS = [raw_documents, *processing_defs.assets]
CHECKS = list(processing_defs.asset_checks)
INDEX_ASSETS = [text_embeddings, image_embeddings, search_index]
INDEX_CHECKS = [search_index_matches_stored_chunks]


@pytest.fixture(scope="module")
def instance() -> DagsterInstance:
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kb")


@pytest.fixture(scope="module")
def blob_store(workdir: Path) -> LocalBlobStore:
    return LocalBlobStore(base_dir=str(workdir / "blobs"))


@pytest.fixture(scope="module")
def processing(settings: Settings) -> ProcessingResource:
    return ProcessingResource.from_settings(settings)


@pytest.fixture(scope="module")
def clip_resource(workdir: Path) -> ClipResource:
    """No checkpoint promoted unless a test promotes one: image_embeddings are then empty."""
    return ClipResource(root_dir=str(workdir / "clip"))


Materialize = Callable[..., tuple[str, ExecuteInProcessResult]]


@pytest.fixture(scope="module")
def index_base() -> Iterator[str]:
    """A chunk index family of this test module's own, deleted at the end."""
    base = f"test-chunks-{uuid.uuid4().hex[:8]}"
    yield base
    es = ElasticsearchResource(url=get_settings().elasticsearch_url, max_retries=0).make_client()
    try:
        delete_family(es, IndexNames(base))
    except ConnectionError:
        pass  # no test of this module started Elasticsearch
    finally:
        es.close()


@pytest.fixture(scope="module")
def materialize_file(
    request: pytest.FixtureRequest,
    instance: DagsterInstance,
    workdir: Path,
    blob_store: LocalBlobStore,
    processing: ProcessingResource,
    corpus_dir: Path,
    index_base: str,
    clip_resource: ClipResource,
) -> Materialize:
    def run(
        path: Path,
        modality: Modality = Modality.DOCUMENT,
        metadata: dict | None = None,
        processing_override: ProcessingResource | None = None,
        raise_on_error: bool = True,
        through_index: bool = False,
        text_encoder: TextEncoderResource | None = None,
    ) -> tuple[str, ExecuteInProcessResult]:
        message = IngestMessage(
            source_id=path.name,
            uri=path.resolve().as_uri(),
            modality=modality,
            metadata=metadata or {},
        )
        resources = processing_override or processing
        doc_id = admit(
            message,
            blob_store,
            allowed_roots=[Path(r) for r in resources.allowed_roots] + [workdir],
            max_bytes=resources.max_bytes,
        )
        instance.add_dynamic_partitions(documents_partitions.name, [doc_id])
        selection = [*ASSETS, *CHECKS]
        extra = {}
        if through_index:
            request.getfixturevalue("elasticsearch_service")
            selection += [*INDEX_ASSETS, *INDEX_CHECKS]
            extra = {
                "clip": clip_resource,
                "clip_encoder": ClipEncoderResource(),
                "text_encoder": text_encoder or TextEncoderResource(),
                "parquet_io_manager": ParquetIOManager(base_uri=str(workdir / "tables")),
                "elasticsearch": ElasticsearchResource(
                    url=get_settings().elasticsearch_url, index_base=index_base
                ),
            }
        result = materialize(
            selection,
            partition_key=doc_id,
            instance=instance,
            resources={
                "blob_store": blob_store,
                "processing": resources,
                "io_manager": FilesystemIOManager(base_dir=str(workdir / "assets")),
                **extra,
            },
            raise_on_error=raise_on_error,
        )
        return doc_id, result

    return run

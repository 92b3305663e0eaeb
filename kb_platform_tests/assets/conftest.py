"""Materialize the document assets in-process on real files, with real local resources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    FilesystemIOManager,
    materialize,
)

from kb_platform.config import Settings
from kb_platform.contracts import IngestMessage, Modality
from kb_platform.defs.ingestion import documents_partitions, raw_documents
from kb_platform.defs.processing import defs as processing_defs
from kb_platform.intake import admit
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.processing import ProcessingResource

ASSETS = [raw_documents, *processing_defs.assets]
CHECKS = list(processing_defs.asset_checks)


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


Materialize = Callable[..., tuple[str, ExecuteInProcessResult]]


@pytest.fixture(scope="module")
def materialize_file(
    instance: DagsterInstance,
    workdir: Path,
    blob_store: LocalBlobStore,
    processing: ProcessingResource,
    corpus_dir: Path,
) -> Materialize:
    def run(
        path: Path,
        modality: Modality = Modality.DOCUMENT,
        metadata: dict | None = None,
        processing_override: ProcessingResource | None = None,
        raise_on_error: bool = True,
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
        result = materialize(
            [*ASSETS, *CHECKS],
            partition_key=doc_id,
            instance=instance,
            resources={
                "blob_store": blob_store,
                "processing": resources,
                "io_manager": FilesystemIOManager(base_dir=str(workdir / "assets")),
            },
            raise_on_error=raise_on_error,
        )
        return doc_id, result

    return run

"""Backup and restore of a whole stack on the real services: documents ingested through Kafka,
the sensor and the processing job into Elasticsearch, a SQLite Dagster instance on disk, the
object store under a data dir and the committed offsets; backed up, destroyed, restored into
the fresh stack and compared. Plus the PostgreSQL instance path (pg_dump / pg_restore on the
local server) and the refusals: a corrupted backup, a non-empty target, retention.

Everything is the test's own: topics and consumer group (``KafkaResource.namespaced``), index
family, snapshot repository (a folder under the node's ``path.repo``), DAGSTER_HOME, data dir
and backup root. The instance uses Dagster's own SQLite storage rather than the pooled one of
dagster.yaml: the pooled engines live as long as the process, and here the stack is destroyed
and restored under the same process (in real life a restore is a new process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    DynamicPartitionsDefinition,
    FilesystemIOManager,
    PipesSubprocessClient,
    asset,
    build_sensor_context,
    materialize,
    mem_io_manager,
)
from elasticsearch import Elasticsearch

from kb_platform.backup import catalog, es_snapshots, instance_db, kafka_offsets, retention, take
from kb_platform.backup import restore as restoring
from kb_platform.backup.es_snapshots import Repository
from kb_platform.backup.manifest import BackupCorrupt, Manifest, sha256_file
from kb_platform.backup.restore import TargetNotEmpty
from kb_platform.backup.stack import Stack
from kb_platform.config import REPO_ROOT, Settings
from kb_platform.contracts import Modality
from kb_platform.definitions import build_definitions
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.kafka import ledger
from kb_platform.models.registry import text_encoder
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform_tests.integration.kafka_helpers import message, produce
from kb_platform_tests.postgres_databases import fresh_database, instance_env, recreate_empty

pytestmark = pytest.mark.services

DOCUMENTS = [
    "documents/unstructured/example-docs/fake-text.txt",
    "documents/unstructured/example-docs/book-war-and-peace-1p.txt",
    "documents/py-pdf-sample-files/001-trivial/minimal-document.pdf",
]
QUERIES = ["war and peace", "this is a test document", "minimal document"]


@dataclass
class Populated:
    stack: Stack
    kafka: KafkaResource
    home: Path
    data: Path
    root: Path  # backup root
    settings_env: dict[str, str]  # the same stack as KB_* settings, for the command line

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))


def _write_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    storage = {"sqlite": {"base_dir": str(home)}}
    (home / "dagster.yaml").write_text(
        json.dumps({"telemetry": {"enabled": False}, "storage": storage})
    )


def _repo_folder(es: Elasticsearch, location: str) -> Path:
    nodes = es.nodes.info(filter_path="nodes.*.settings.path.repo")["nodes"]
    (node,) = nodes.values()
    return Path(node["settings"]["path"]["repo"][0]) / location


@pytest.fixture(scope="module")
def populated(
    tmp_path_factory: pytest.TempPathFactory,
    kafka: KafkaResource,
    es: Elasticsearch,
    corpus_dir: Path,
    settings: Settings,
) -> Iterator[Populated]:
    name = f"bk-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("backup")
    home, data, root = work / "dagster_home", work / "data", work / "backups"
    _write_home(home)
    scoped = kafka.namespaced(name, poll_timeout_s=3.0)
    scoped.create_topics(partitions=1)
    repository = Repository(name=name, type="fs", location=name)
    stack = Stack(
        es=es,
        names=IndexNames(name),
        repository=repository,
        instance=instance_db.from_dagster_home(home),
        trees={"data": data},
        admin=scoped.admin(),
        group=scoped.consumer_group,
        topics=scoped.topics().all_ingest(),
    )
    env = {
        "DAGSTER_HOME": str(home),
        "KB_DATA_DIR": str(data),
        "KB_BACKUP_DIR": str(root),
        "KB_ELASTICSEARCH_INDEX_BASE": name,
        "KB_BACKUP_ES_REPOSITORY": name,
        "KB_BACKUP_ES_FS_LOCATION": name,
        "KB_KAFKA_INGEST_TOPIC_PREFIX": scoped.ingest_topic_prefix,
        "KB_KAFKA_CONSUMER_GROUP": scoped.consumer_group,
    }
    populated = Populated(stack, scoped, home, data, root, env)
    _ingest(populated, [corpus_dir / d for d in DOCUMENTS], settings)
    yield populated
    delete_family(es, IndexNames(name))
    lenient = es.options(ignore_status=404)
    for found in lenient.snapshot.get(repository=name, snapshot="_all").get("snapshots", []):
        es_snapshots.delete_snapshot(es, name, found["snapshot"])
    lenient.snapshot.delete_repository(name=name)
    shutil.rmtree(_repo_folder(es, name), ignore_errors=True)  # the repository's own folder
    admin = scoped.admin()
    for future in admin.delete_topics(scoped.create_topics()[0]).values():
        future.result(timeout=30)
    admin.delete_consumer_groups([scoped.consumer_group])[scoped.consumer_group].result(30)


def _ingest(populated: Populated, paths: list[Path], settings: Settings) -> None:
    """Kafka -> sensor -> one run per document -> committed offsets, as the daemon does."""
    kafka, data = populated.kafka, populated.data
    produce(kafka, kafka.topics().ingest(Modality.DOCUMENT), [message(p) for p in paths])
    resources = {
        "kafka": kafka,
        "blob_store": LocalBlobStore(base_dir=str(data / "blobs")),
        "processing": ProcessingResource.from_settings(settings),
        "clip": ClipResource(root_dir=str(data / "clip")),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "elasticsearch": ElasticsearchResource(
            url=settings.elasticsearch_url, index_base=populated.stack.names.base
        ),
        "parquet_io_manager": ParquetIOManager(base_uri=str(data / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(data / "assets")),
    }
    job = build_definitions(resources).resolve_job_def("process_documents")
    with populated.instance() as instance:
        with build_sensor_context(instance=instance, resources=resources) as context:
            tick = kafka_ingest_sensor(context)
        assert len(tick.run_requests) == len(paths)
        for request in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions("documents", list(request.partition_keys))
        for request in tick.run_requests:
            result = job.execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=request.tags
            )
            assert result.success
        with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
            commit_settled_offsets(context)


def _fingerprint(populated: Populated) -> dict[str, Any]:
    """Everything the restore must bring back, as comparable values."""
    stack, es = populated.stack, populated.stack.es
    alias = stack.names.read_alias
    es.indices.refresh(index=alias)
    per_doc = es.search(
        index=alias, size=0, aggs={"docs": {"terms": {"field": "doc_id", "size": 100}}}
    )["aggregations"]["docs"]["buckets"]
    chunks = es.search(index=alias, size=1000, sort=["chunk_id"], source=["chunk_id", "text"])
    top = {q: _ids(es.search(index=alias, query={"match": {"text": q}}, size=5)) for q in QUERIES}
    encoder = text_encoder()  # loaded once per process (the runs loaded it already)
    knn = {
        q: _ids(
            es.search(
                index=alias,
                knn={
                    "field": "text_vector",
                    "query_vector": encoder.encode([q])[0].tolist(),
                    "k": 5,
                    "num_candidates": 50,
                },
            )
        )
        for q in QUERIES
    }
    topic = populated.kafka.topics().ingest(Modality.DOCUMENT)
    with populated.instance() as instance:
        partitions = sorted(instance.get_dynamic_partitions("documents"))
        materialized = {
            "/".join(key.path): sorted(instance.get_materialized_partitions(key))
            for key in instance.get_asset_keys()
        }
        runs = sorted((r.run_id, r.status.value) for r in instance.get_runs())
        read_position = ledger.read_position(instance, topic, 0)
    return {
        "chunks_per_doc": {b["key"]: b["doc_count"] for b in per_doc},
        "chunks": [
            (h["_source"]["chunk_id"], h["_source"]["text"]) for h in chunks["hits"]["hits"]
        ],
        "aliases": es_snapshots.family_indices(es, stack.names),
        "bm25_top": top,
        "knn_top": knn,
        "partitions": partitions,
        "materialized": materialized,
        "runs": runs,
        "read_position": read_position,
        "objects": {
            p.relative_to(populated.data).as_posix(): sha256_file(p)
            for p in sorted(populated.data.rglob("*"))
            if p.is_file()
        },
        "offsets": kafka_offsets.committed(stack.admin, stack.group, stack.topics),
    }


def _ids(response: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in response["hits"]["hits"]]


def _destroy(populated: Populated) -> None:
    """The stack is lost: its indices, instance, object store and consumer group."""
    stack = populated.stack
    delete_family(stack.es, stack.names)
    shutil.rmtree(populated.home)
    _write_home(populated.home)  # a fresh instance's configuration
    shutil.rmtree(populated.data)
    stack.admin.delete_consumer_groups([stack.group])[stack.group].result(timeout=30)


def test_a_restored_stack_holds_what_was_backed_up(populated: Populated) -> None:
    before = _fingerprint(populated)
    assert len(before["chunks_per_doc"]) == len(DOCUMENTS) == len(before["partitions"])
    topic = populated.kafka.topics().ingest(Modality.DOCUMENT)
    assert before["offsets"] == {(topic, 0): len(DOCUMENTS)}
    assert {path.split("/")[0] for path in before["objects"]} >= {"blobs", "tables", "assets"}
    assert len(before["runs"]) == len(DOCUMENTS) and before["read_position"] == len(DOCUMENTS)
    assert before["materialized"]["search_index"] == before["partitions"]

    record, _ = take.backup(populated.stack, populated.root, keep_last=5, keep_days=None)
    assert record.status == "complete"
    assert list(record.parts) == ["kafka_offsets", "instance", "objects", "elasticsearch"]
    snapshot = record.parts["elasticsearch"].details
    assert snapshot["state"] == "SUCCESS"
    assert sum(i["docs"] for i in snapshot["indices"].values()) == len(before["chunks"])
    assert len(record.parts["objects"].files) == len(before["objects"])

    _destroy(populated)
    assert not es_snapshots.family_indices(populated.stack.es, populated.stack.names)
    assert not populated.stack.instance.has_runs()
    assert not kafka_offsets.committed(
        populated.stack.admin, populated.stack.group, populated.stack.topics
    )

    restored_id, done = restoring.restore(populated.stack, populated.root, "latest", force=False)
    assert restored_id == record.id
    assert [r.part for r in done] == [
        "verify",
        "elasticsearch",
        "instance",
        "objects",
        "kafka_offsets",
    ]
    assert _fingerprint(populated) == before

    # Restoring again over the now populated stack is refused, and nothing changes.
    with pytest.raises(
        TargetNotEmpty, match=r"elasticsearch.*\n.*instance.*\n.*objects.*\n.*kafka"
    ):
        restoring.restore(populated.stack, populated.root, record.id, force=False)
    assert _fingerprint(populated) == before
    # --force replaces it with the same state.
    restoring.restore(populated.stack, populated.root, record.id, force=True)
    assert _fingerprint(populated) == before


def test_a_corrupted_backup_file_is_rejected_before_anything_changes(
    populated: Populated,
) -> None:
    before = _fingerprint(populated)
    record, _ = take.backup(populated.stack, populated.root, keep_last=5, keep_days=None)
    folder = populated.root / record.id
    victim = next(f for f in record.parts["objects"].files if f.path.endswith(".parquet"))
    data = bytearray((folder / victim.path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    (folder / victim.path).write_bytes(bytes(data))

    with pytest.raises(BackupCorrupt, match="does not match its sha256"):
        restoring.restore(populated.stack, populated.root, record.id, force=True)
    (folder / record.parts["instance"].files[0].path).unlink()
    with pytest.raises(BackupCorrupt, match="is missing"):
        restoring.restore(populated.stack, populated.root, record.id, force=True)
    assert _fingerprint(populated) == before
    _delete_backup(populated, record.id)


def _delete_backup(populated: Populated, backup_id: str) -> None:
    (entry,) = [e for e in catalog.entries(populated.root) if e.id == backup_id]
    retention.delete(
        entry,
        lambda repo, name: es_snapshots.delete_snapshot(populated.stack.es, repo, name),
    )


def test_retention_keeps_the_newest_n_and_deletes_their_snapshots(populated: Populated) -> None:
    stack, root = populated.stack, populated.root
    # a backup that died half-way, older than the ones that follow
    dead_at = datetime(2020, 1, 1, tzinfo=UTC)
    dead_id = catalog.new_id(dead_at)
    (root / dead_id).mkdir(parents=True)
    dead = Manifest(id=dead_id, started_at=dead_at.isoformat())
    (root / dead_id / "manifest.json").write_text(dead.model_dump_json())

    made = [take.backup(stack, root, keep_last=2, keep_days=None) for _ in range(3)]
    ids = [record.id for record, _ in made]
    left = catalog.entries(root)
    assert [e.id for e in left] == [ids[2], ids[1]]
    assert dead_id in made[0][1]  # deleted by the first good backup after it
    found = stack.es.snapshot.get(repository=stack.repository.name, snapshot="_all")
    snapshots = {s["snapshot"] for s in found["snapshots"]}
    assert snapshots == {take.snapshot_name(stack, i) for i in ids[1:]}


def test_the_command_line_backs_up_lists_and_refuses_a_non_empty_target(
    populated: Populated,
) -> None:
    env = {**os.environ, **populated.settings_env}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "kb_platform.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True)

    made = cli("backup", "--keep-last", "2")
    assert made.returncode == 0, made.stderr
    newest = catalog.entries(populated.root)[0]
    assert newest.complete and made.stdout.startswith(f"backup {newest.id}: ")
    assert len([e for e in catalog.entries(populated.root) if e.complete]) <= 2

    listed = cli("backup", "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:2] == [newest.id, "complete"]

    refused = cli("restore", "latest")
    assert refused.returncode == 1
    assert "not empty" in refused.stderr and "restore --force" in refused.stderr


@pytest.fixture
def prod_home(
    tmp_path: Path, postgres_service: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A DAGSTER_HOME with the production configuration over a database of its own."""
    home = tmp_path / "prod_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster" / "dagster.prod.yaml", home / "dagster.yaml")
    with fresh_database("kb_backup") as name:
        for key, value in {"DAGSTER_HOME": str(home), **instance_env(name)}.items():
            monkeypatch.setenv(key, value)
        yield home


documents = DynamicPartitionsDefinition(name="documents")


@asset(partitions_def=documents)
def probe() -> int:
    return 1


def _pg_state(home: Path) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    with DagsterInstance.from_config(str(home)) as instance:
        return (
            sorted(instance.get_dynamic_partitions("documents")),
            sorted((r.run_id, r.status.value) for r in instance.get_runs()),
            sorted(instance.get_materialized_partitions(probe.key)),
        )


def test_a_postgres_instance_is_dumped_and_restored(prod_home: Path, tmp_path: Path) -> None:
    with DagsterInstance.from_config(str(prod_home)) as instance:
        instance.add_dynamic_partitions("documents", ["a" * 16, "b" * 16])
        for key in ("a" * 16, "b" * 16):
            result = materialize(
                [probe],
                instance=instance,
                partition_key=key,
                resources={"io_manager": mem_io_manager},
            )
            assert result.success
    before = _pg_state(prod_home)
    database = instance_db.from_dagster_home(prod_home)
    assert isinstance(database, instance_db.PostgresInstance) and database.has_runs()

    folder = tmp_path / "backup"
    files, details = database.backup(folder)
    assert details["kind"] == "postgres" and details["server"]
    # the database is lost: dropped and made again, empty
    recreate_empty(database.db)
    assert not database.has_runs()

    database.restore(folder, files)
    assert _pg_state(prod_home) == before
    database.restore(folder, files)  # --clean: over a populated database too
    assert _pg_state(prod_home) == before


def test_committed_offsets_are_not_changed_under_an_active_member(populated: Populated) -> None:
    stack = populated.stack
    saved = {
        "offsets": [
            {"topic": t, "partition": p, "offset": 0}
            for (t, p) in kafka_offsets.committed(stack.admin, stack.group, stack.topics)
        ]
    }
    before = kafka_offsets.committed(stack.admin, stack.group, stack.topics)
    member = populated.kafka.consumer(stack.group)
    member.subscribe([populated.kafka.topics().ingest(Modality.DOCUMENT)])
    try:
        for _ in range(20):  # joined once it has its assignment
            member.poll(0.5)
            if member.assignment():
                break
        with pytest.raises(kafka_offsets.GroupActive, match="active member"):
            kafka_offsets.restore(stack.admin, stack.group, saved, replace=True)
    finally:
        member.close()
    assert kafka_offsets.committed(stack.admin, stack.group, stack.topics) == before

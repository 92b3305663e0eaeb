"""Backup and restore of a stack filled with a sample of the shared corpus: sizes, backup time,
restore time (the RTO of the sample) and the RPO a backup schedule implies.

    .venv/bin/python benchmarks/backup_restore.py [--limit 30] [--interval-h 1 6 24]

Fills a stack of its own (topics, consumer group, index family, snapshot repository,
DAGSTER_HOME with dagster.yaml's pooled SQLite storage, data dir) with every n-th file of
../shared/corpus/documents through Kafka, the ingest sensor and the processing job (run one
after another in this process, as benchmarks/ingest.py does), then: a backup, a second backup
of the unchanged stack (Elasticsearch snapshots are incremental), the stack destroyed (indices,
instance, data dir, consumer group), a restore into the fresh one, and checks that chunk
counts, runs, files and committed offsets came back. Needs Kafka and Elasticsearch
(`kb-platform services up`).

RPO: a backup every I hours that takes B to run loses at most I + B of the stack's state. What
came in through Kafka in that window is not lost with it: it is still on the ingest topics as
long as their retention exceeds I + B, and the restored committed offsets and sensor cursor
point at it, so the restored stack reads and processes it again (run keys and idempotent
upserts by chunk_id make the second pass harmless). Lost for good are only the state changes
that did not come from Kafka in that window (`kb-platform ingest` without Kafka, a CLIP
training run, manual deletions), and the window's processing has to be redone after the
restore, which adds to the RTO.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka.admin import ConfigResource
from dagster import DagsterInstance, FilesystemIOManager, PipesSubprocessClient
from ingest import in_process  # benchmarks/, next to this script
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.backup import es_snapshots, instance_db, kafka_offsets, take
from kb_platform.backup import restore as restoring
from kb_platform.backup.es_snapshots import Repository
from kb_platform.backup.stack import Stack
from kb_platform.cli import _declared_modality, _files
from kb_platform.config import REPO_ROOT, get_settings
from kb_platform.contracts import IngestMessage
from kb_platform.index.client import elasticsearch_client
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.kafka import ledger
from kb_platform.kafka.ingest_reader import partition_key
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource


def produce_sample(kafka: KafkaResource, corpus: Path, limit: int) -> tuple[int, float]:
    """Every n-th file of the corpus documents (a mix of formats and sizes), as file:// messages."""
    files = _files((corpus / "documents",))
    sample = files[:: max(1, len(files) // limit)][:limit]
    producer = kafka.producer()
    for path in sample:
        modality = _declared_modality(path)
        message = IngestMessage(source_id=str(path), uri=path.resolve().as_uri(), modality=modality)
        producer.produce(kafka.topics().ingest(modality), value=message.model_dump_json().encode())
    assert producer.flush(60) == 0
    return len(sample), time.time()


def seed_read_positions(kafka: KafkaResource, home: Path) -> None:
    """Records "nothing read yet" for every ingest partition before the first tick. Dagster's
    SQLite run storage drops the new keys of a ``set_cursor_values`` call that also updates
    existing ones (an INSERT that fails, then an UPDATE of the existing keys only), so a topic
    whose first message the sensor reads in a later tick than another topic's would never get
    a read position, and its offsets would never be committed. With every key present from the
    start, each later call is a plain update. (PostgreSQL's storage upserts and is not affected.)
    """
    storage = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["storage"]
    storage["custom"]["config"]["base_dir"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    with DagsterInstance.local_temp(tempdir=str(home), overrides={"storage": storage}) as instance:
        ledger.record_read_positions(
            instance, {partition_key(t, 0): 0 for t in kafka.topics().all_ingest()}
        )


def state(stack: Stack, home: Path, data: Path) -> dict[str, object]:
    """What a restore must bring back, read without the Dagster instance (this process's pooled
    SQLite engines still point at the destroyed files)."""
    indices = es_snapshots.family_indices(stack.es, stack.names)
    runs = 0
    if (home / "history" / "runs.db").is_file():
        with sqlite3.connect(home / "history" / "runs.db") as conn:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    return {
        "chunks": es_snapshots.doc_counts(stack.es, list(indices)) if indices else {},
        "aliases": indices,
        "runs": runs,
        "files": sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()),
        "offsets": kafka_offsets.committed(stack.admin, stack.group, stack.topics),
    }


def retention_hours(kafka: KafkaResource, topics: list[str]) -> float:
    admin = kafka.admin()  # held until the futures are done (a dropped client cancels them)
    futures = admin.describe_configs([ConfigResource("topic", t) for t in topics])
    values = [float(f.result(timeout=30)["retention.ms"].value) for f in futures.values()]
    return min(values) / 3_600_000 if min(values) >= 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    parser.add_argument("--limit", type=int, default=30, help="documents in the sample")
    parser.add_argument("--interval-h", type=float, nargs="+", default=[1.0, 6.0, 24.0])
    args = parser.parse_args()

    settings = get_settings()
    name = f"bench-bk-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="kb-backup-bench-"))
    home, data, root = work / "dagster_home", work / "data", work / "backups"
    kafka = KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers).namespaced(
        name, max_batch=20
    )
    kafka.create_topics(partitions=1)
    resources = {
        "kafka": kafka,
        "blob_store": LocalBlobStore(base_dir=str(data / "blobs")),
        "processing": ProcessingResource.from_settings(settings),
        "clip": ClipResource(root_dir=str(data / "clip")),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "elasticsearch": ElasticsearchResource(url=settings.elasticsearch_url, index_base=name),
        "parquet_io_manager": ParquetIOManager(base_uri=str(data / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(data / "assets")),
    }
    es = elasticsearch_client(settings.elasticsearch_url, request_timeout=300)
    stack = Stack(
        es=es,
        names=IndexNames(name),
        repository=Repository(name=name, type="fs", location=name),
        instance=instance_db.SqliteInstance(home),
        trees={"data": data},
        admin=kafka.admin(),
        group=kafka.consumer_group,
        topics=kafka.topics().all_ingest(),
    )
    try:
        seed_read_positions(kafka, home)
        produced, produced_at = produce_sample(kafka, args.corpus, args.limit)
        started = time.monotonic()
        measured = in_process(kafka, resources, produced_at, home)
        print(
            f"stack filled: {produced} documents, runs {dict(measured.outcomes)} in "
            f"{time.monotonic() - started:.0f} s (sensor + runs + offset commits, in process)"
        )
        before = state(stack, home, data)

        record, _ = take.backup(stack, root, keep_last=2, keep_days=None)
        print("\n## backup")
        print("\n".join(take.summary(record, [])))
        again, _ = take.backup(stack, root, keep_last=2, keep_days=None)
        print("\n## second backup, nothing changed (the snapshot shares the first one's files)")
        print("\n".join(take.summary(again, [])))

        delete_family(es, stack.names)
        shutil.rmtree(home)
        shutil.rmtree(data)
        stack.admin.delete_consumer_groups([stack.group])[stack.group].result(timeout=30)

        restored_id, done = restoring.restore(stack, root, "latest", force=False)
        print("\n## restore into the destroyed (fresh) stack")
        print("\n".join(restoring.summary(restored_id, done)))
        after = state(stack, home, data)
        same = {key: before[key] == after[key] for key in before}
        print(f"restored state equals the backed-up state: {same}")
        if not all(same.values()):
            raise SystemExit(1)

        rto = sum(r.seconds for r in done)
        duration = record.seconds or 0.0
        chunks = sum(before["chunks"].values())  # type: ignore[union-attr]
        print("\n## RPO / RTO for this sample")
        print(
            f"sample: {produced} documents, {chunks} chunks, {before['runs']} runs, "
            f"{len(before['files'])} files; backup {record.bytes / 1e6:.1f} MB "
            f"({record.bytes / max(produced, 1) / 1e3:.0f} kB per document)"
        )
        print(f"RTO (restore incl. checksum verification): {rto:.1f} s")
        for hours in args.interval_h:
            print(
                f"RPO with a backup every {hours:g} h: {hours:g} h + {duration:.0f} s "
                f"(backup duration) = {hours * 3600 + duration:.0f} s of stack state"
            )
        kept = retention_hours(kafka, kafka.topics().all_ingest())
        print(
            f"ingest topic retention here: {kept:g} h: Kafka-ingested work of a window shorter "
            "than that is replayed from the restored offsets (RPO 0 for it, see the docstring)"
        )
    finally:
        delete_family(es, stack.names)
        lenient = es.options(ignore_status=404)
        for found in lenient.snapshot.get(repository=name, snapshot="_all").get("snapshots", []):
            es_snapshots.delete_snapshot(es, name, found["snapshot"])
        lenient.snapshot.delete_repository(name=name)
        nodes = es.nodes.info(filter_path="nodes.*.settings.path.repo")["nodes"]
        for node in nodes.values():
            shutil.rmtree(Path(node["settings"]["path"]["repo"][0]) / name, ignore_errors=True)
        admin = kafka.admin()
        for future in admin.delete_topics(kafka.create_topics()[0]).values():
            future.result(timeout=30)
        admin.delete_consumer_groups([kafka.consumer_group])[kafka.consumer_group].result(30)
        es.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    with printed_machine_load():
        main()

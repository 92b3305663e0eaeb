"""``kb-platform backup``: one backup of every part of a stack that holds state, into a new
folder under the backup root, then retention.

The parts are taken in this order, each at least as new as the one before: 1. Kafka offsets
(the settled line), 2. the Dagster instance (runs, partitions, the sensor's cursor), 3. the
object store, 4. the Elasticsearch snapshot. So the instance never records a successful run
whose files or chunks the later parts lack, and whatever happened after the offsets were read
is either in the later parts already or still on Kafka past the restored offsets and cursor,
where it is read and processed again (run keys and idempotent upserts make that harmless): a
restore never skips a message.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka
from elasticsearch import ApiError, TransportError

from kb_platform.backup import catalog, es_snapshots, kafka_offsets, manifest, object_store
from kb_platform.backup import retention as retention_policy
from kb_platform.backup.manifest import FileEntry, Manifest, Part
from kb_platform.backup.stack import Stack

log = logging.getLogger(__name__)


def snapshot_name(stack: Stack, backup_id: str) -> str:
    return f"{stack.names.base}-{backup_id.lower()}"


def _versions(stack: Stack) -> dict[str, str]:
    return {
        "kb_platform": metadata.version("kb-platform"),
        "dagster": metadata.version("dagster"),
        "python": platform.python_version(),
        "elasticsearch": stack.es.info()["version"]["number"],
        "librdkafka": confluent_kafka.libversion()[0],
    }


def _timed(work: Callable[[], tuple[list[FileEntry], dict[str, Any]]]) -> Part:
    at, started = datetime.now(UTC).isoformat(), time.monotonic()
    files, details = work()
    return Part(seconds=time.monotonic() - started, at=at, files=files, details=details)


def take(stack: Stack, root: Path, at: datetime | None = None) -> Manifest:
    """Takes one backup; returns its manifest (complete). A part that fails leaves the folder
    with its ``running`` manifest (retention clears it once a later backup is good)."""
    started_at = at or datetime.now(UTC)
    clock = time.monotonic()
    backup_id = catalog.new_id(started_at)
    folder = root / backup_id
    folder.mkdir(parents=True)
    snapshot = snapshot_name(stack, backup_id)
    record = Manifest(
        id=backup_id,
        started_at=started_at.isoformat(),
        versions=_versions(stack),
        stack=stack.describe(),
        elasticsearch_snapshot={"repository": stack.repository.name, "snapshot": snapshot},
    )
    manifest.write(folder, record)
    record.parts["kafka_offsets"] = _timed(
        lambda: kafka_offsets.backup(stack.admin, stack.group, stack.topics, folder)
    )
    record.parts["instance"] = _timed(lambda: stack.instance.backup(folder))
    record.parts["objects"] = _timed(
        lambda: (
            object_store.backup(stack.trees, folder),
            {"trees": {name: str(path) for name, path in stack.trees.items()}}
            if stack.trees
            else {"skipped": "no local object store (S3: bucket versioning and replication)"},
        )
    )
    record.parts["elasticsearch"] = _timed(
        lambda: ([], es_snapshots.snapshot(stack.es, stack.repository, snapshot, stack.names))
    )
    if record.parts["elasticsearch"].details["snapshot"] is None:
        record.elasticsearch_snapshot = None  # the family had no index: nothing to snapshot
    record.status = "complete"
    record.finished_at = datetime.now(UTC).isoformat()
    record.seconds = time.monotonic() - clock
    manifest.write(folder, record)
    log.info("backup %s complete: %d bytes in %.1f s", backup_id, record.bytes, record.seconds)
    return record


def prune(
    stack: Stack, root: Path, keep_last: int | None, keep_days: float | None, now: datetime
) -> list[str]:
    """Applies retention under ``root`` (after a good backup); returns the deleted ids."""
    doomed = retention_policy.to_delete(catalog.entries(root), keep_last, keep_days, now)
    deleted = []
    for entry in doomed:
        try:
            retention_policy.delete(
                entry,
                lambda repository, name: es_snapshots.delete_snapshot(stack.es, repository, name),
            )
        except (ApiError, TransportError) as exc:  # kept whole, deleted by the next backup
            log.warning("backup %s not deleted: its snapshot could not be: %s", entry.id, exc)
            continue
        deleted.append(entry.id)
    return deleted


def backup(
    stack: Stack, root: Path, keep_last: int | None, keep_days: float | None
) -> tuple[Manifest, list[str]]:
    """One backup, then retention, holding the root's lock."""
    with catalog.locked(root):
        record = take(stack, root)
        deleted = prune(stack, root, keep_last, keep_days, datetime.now(UTC))
    return record, deleted


def summary(record: Manifest, deleted: list[str]) -> list[str]:
    lines = [f"backup {record.id}: {record.bytes / 1e6:.1f} MB in {record.seconds:.1f} s"]
    for name, part in record.parts.items():
        extra = ""
        if name == "elasticsearch" and part.details.get("snapshot"):
            docs = sum(i["docs"] for i in part.details["indices"].values())
            new = part.details["snapshot_new_bytes"] / 1e6
            extra = f", snapshot {part.details['snapshot']} ({docs} chunks, {new:.1f} MB new)"
        elif name == "kafka_offsets":
            extra = f", {part.details['partitions']} partitions of {part.details['group']}"
        lines.append(
            f"  {name:<14} {part.bytes / 1e6:>9.1f} MB {len(part.files):>6} files "
            f"{part.seconds:>7.1f} s{extra}"
        )
    if deleted:
        lines.append(f"retention deleted {len(deleted)}: {', '.join(deleted)}")
    return lines

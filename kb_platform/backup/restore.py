"""``kb-platform restore <backup-id|latest>``: a backup into a stack (a fresh one, or any with
``force``), meant for a stack whose Dagster daemon and other consumers of the ingest group are
stopped.

Before anything is touched: every file of the backup is checked against the manifest (size and
sha256), the consumer group must have no members, and the target must hold none of the state
the backup brings (chunk indices of the family, runs in the instance, files in the object store,
committed offsets of the group) unless ``force``. Then, in order: Elasticsearch (the family's
existing indices deleted first, the snapshot restored with its aliases, counts and aliases
checked), the instance database, the object store (the folders made to hold exactly the
backed-up files) and last the committed offsets, so the daemon, once started, resumes from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kb_platform.backup import catalog, es_snapshots, kafka_offsets, manifest, object_store
from kb_platform.backup.kafka_offsets import GroupActive
from kb_platform.backup.stack import Stack

log = logging.getLogger(__name__)


class TargetNotEmpty(Exception):
    pass


@dataclass(frozen=True)
class Restored:
    part: str
    seconds: float
    what: str


def occupied(stack: Stack) -> list[str]:
    """What the target holds already, one line per part that is not empty."""
    found = []
    if indices := es_snapshots.family_indices(stack.es, stack.names):
        found.append(f"elasticsearch: {', '.join(indices)}")
    if stack.instance.has_runs():
        found.append(f"instance: runs in {stack.instance.describe()}")
    if not object_store.is_empty(stack.trees):
        found.append(f"objects: files under {', '.join(str(p) for p in stack.trees.values())}")
    if kafka_offsets.committed(stack.admin, stack.group, stack.topics):
        found.append(f"kafka: committed offsets of {stack.group}")
    return found


def restore(stack: Stack, root: Path, backup_id: str, force: bool) -> tuple[str, list[Restored]]:
    """Restores one backup; returns its id and what each part restored in how long."""
    with catalog.locked(root):
        entry = catalog.resolve(root, backup_id)
        record = entry.manifest
        assert record is not None  # resolve returns complete backups only
        backed_base = record.stack.get("index_base")
        if backed_base != stack.names.base:
            raise ValueError(
                f"backup {record.id} is of index family {backed_base}, this stack's is "
                f"{stack.names.base}: set KB_ELASTICSEARCH_INDEX_BASE={backed_base}"
            )
        started = time.monotonic()
        manifest.verify(entry.folder, record)
        verified = Restored("verify", time.monotonic() - started, f"{len(record.files())} files")
        if active := kafka_offsets.members(stack.admin, stack.group):
            raise GroupActive(f"consumer group {stack.group} has {active} active member(s)")
        if (found := occupied(stack)) and not force:
            raise TargetNotEmpty(
                "the target is not empty (restore --force replaces it):\n  " + "\n  ".join(found)
            )
        parts = record.parts
        done = [verified]

        def timed(part: str, work: Callable[[], str]) -> None:
            began = time.monotonic()
            what = work()
            done.append(Restored(part, time.monotonic() - began, what))
            log.info("restored %s in %.1f s: %s", part, done[-1].seconds, what)

        def elasticsearch() -> str:
            cleared = es_snapshots.clear(stack.es, stack.names)
            details = parts["elasticsearch"].details
            if details.get("snapshot") is None:
                return f"no index in the backup; deleted {cleared or 'none'}"
            counts = es_snapshots.restore(stack.es, details, stack.names, stack.replicas)
            return f"snapshot {details['snapshot']}: {counts} chunks (deleted first: {cleared})"

        def instance() -> str:
            stack.instance.restore(entry.folder, parts["instance"].files)
            return f"{len(parts['instance'].files)} files into {stack.instance.describe()}"

        def objects() -> str:
            object_store.restore(stack.trees, entry.folder, parts["objects"].files)
            size = sum(f.size for f in parts["objects"].files)
            return f"{len(parts['objects'].files)} files, {size / 1e6:.1f} MB"

        def offsets() -> str:
            saved = kafka_offsets.load(entry.folder)
            result = kafka_offsets.restore(stack.admin, stack.group, saved, replace=True)
            lost = f"; BEYOND RETENTION: {result['beyond_retention']}" * bool(
                result["beyond_retention"]
            )
            return f"{result['partitions']} partitions of {stack.group}{lost}"

        timed("elasticsearch", elasticsearch)
        timed("instance", instance)
        timed("objects", objects)
        timed("kafka_offsets", offsets)
    return record.id, done


def summary(backup_id: str, done: list[Restored]) -> list[str]:
    total = sum(r.seconds for r in done)
    lines = [f"restored backup {backup_id} in {total:.1f} s"]
    lines += [f"  {r.part:<14} {r.seconds:>7.1f} s  {r.what}" for r in done]
    return lines

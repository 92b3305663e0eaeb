"""VolumeSnapshots of a PersistentVolumeClaim, taken on a schedule and pruned to the newest few:
the model store's backup (the Helm chart's CronJob runs ``kb-platform model-store snapshot``).

Pruning never leaves fewer than ``keep`` snapshots that are ready to restore from: it counts
only ready ones against ``keep``, keeps any newer snapshot still being cut, and deletes the rest,
so a run of failed snapshots cannot prune away the last good one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CustomObjectsApi

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "snapshot.storage.k8s.io", "v1", "volumesnapshots"
SNAPSHOT_OF = "kb-platform/snapshot-of"  # label: the claim a snapshot was taken of


@dataclass(frozen=True)
class Snapshot:
    name: str
    created: str  # RFC 3339, the API server's creationTimestamp
    ready: bool

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Snapshot:
        meta, status = obj["metadata"], obj.get("status") or {}
        return cls(
            meta["name"], meta.get("creationTimestamp") or "", bool(status.get("readyToUse"))
        )


def snapshot_name(claim: str, at: datetime) -> str:
    return f"{claim}-{at.astimezone(UTC):%Y%m%d-%H%M%S}"


def take(
    api: CustomObjectsApi, namespace: str, claim: str, snapshot_class: str, at: datetime
) -> str:
    """Asks for a snapshot of ``claim`` now; returns its name."""
    name = snapshot_name(claim, at)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "labels": {SNAPSHOT_OF: claim}},
        "spec": {
            "volumeSnapshotClassName": snapshot_class,
            "source": {"persistentVolumeClaimName": claim},
        },
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    log.info("snapshot %s of %s requested", name, claim)
    return name


def snapshots_of(api: CustomObjectsApi, namespace: str, claim: str) -> list[Snapshot]:
    """The claim's snapshots, newest first."""
    found = api.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=f"{SNAPSHOT_OF}={claim}"
    )
    snapshots = [Snapshot.of(item) for item in found.get("items", [])]
    return sorted(snapshots, key=lambda s: (s.created, s.name), reverse=True)


def to_prune(snapshots: list[Snapshot], keep: int) -> list[Snapshot]:
    """Of ``snapshots`` (newest first), the ones to delete: all after the ``keep``-th ready one,
    and none while fewer than ``keep`` are ready."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    ready = 0
    for index, snapshot in enumerate(snapshots):
        ready += snapshot.ready
        if ready == keep:
            return snapshots[index + 1 :]
    return []


def prune(api: CustomObjectsApi, namespace: str, claim: str, keep: int) -> list[str]:
    """Deletes the claim's snapshots beyond the newest ``keep`` ready ones; returns their names."""
    doomed = to_prune(snapshots_of(api, namespace, claim), keep)
    for snapshot in doomed:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, snapshot.name)
        log.info("snapshot %s of %s deleted (keeping %d ready)", snapshot.name, claim, keep)
    return [s.name for s in doomed]

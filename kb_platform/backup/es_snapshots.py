"""Elasticsearch snapshots of one chunk index family (``<base>-v{N}`` with their aliases) in a
registered snapshot repository: ``fs`` (a folder inside the nodes' ``path.repo``) locally,
``s3`` (the repository-s3 module: bucket, base_path, client) in production.

The snapshot holds the family's indices only (``include_global_state: false``: no templates,
no cluster settings) with their aliases, so a restore brings back both aliases exactly as they
pointed. The index template is code (``index.lifecycle.ensure_template``) and is put again
after a restore.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from elasticsearch import Elasticsearch, NotFoundError
from pydantic import BaseModel, ConfigDict, model_validator

from kb_platform.config import Settings
from kb_platform.index.lifecycle import alias_targets, ensure_template
from kb_platform.index.mapping import IndexNames

log = logging.getLogger(__name__)

# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a
# letter or digit (the AWS rules the repository-s3 module passes on).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class SnapshotFailed(Exception):
    pass


class Repository(BaseModel):
    """A snapshot repository's name, type and settings, validated before Elasticsearch sees
    them. ``fs``: ``location`` relative to the node's ``path.repo`` (or absolute inside it);
    ``s3``: ``bucket``, ``base_path`` and the repository-s3 ``client`` (credentials live in the
    nodes' keystore, never here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["fs", "s3"]
    location: str | None = None
    bucket: str | None = None
    base_path: str | None = None
    client: str = "default"

    @model_validator(mode="after")
    def _check(self) -> Repository:
        if not _REPOSITORY_NAME.match(self.name):
            raise ValueError(f"repository name {self.name!r}: lowercase letters, digits, ._-")
        if self.type == "fs":
            if not self.location:
                raise ValueError("an fs repository needs a location (inside path.repo)")
            if ".." in PurePosixPath(self.location).parts:
                raise ValueError(f"fs location {self.location!r} must not contain '..'")
            if self.bucket:
                raise ValueError("an fs repository takes no bucket")
        else:
            if not self.bucket or not _BUCKET.match(self.bucket) or ".." in self.bucket:
                raise ValueError(f"s3 bucket {self.bucket!r} is not a valid bucket name")
            if self.base_path is not None and (
                self.base_path.startswith("/") or ".." in PurePosixPath(self.base_path).parts
            ):
                raise ValueError(f"s3 base_path {self.base_path!r}: relative, without '..'")
            if self.location:
                raise ValueError("an s3 repository takes a bucket and base_path, not a location")
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> Repository:
        if settings.backup_es_repository_type == "s3":
            return cls(
                name=settings.backup_es_repository,
                type="s3",
                bucket=settings.backup_es_s3_bucket,
                base_path=settings.backup_es_s3_base_path,
                client=settings.backup_es_s3_client,
            )
        return cls(
            name=settings.backup_es_repository,
            type=settings.backup_es_repository_type,  # type: ignore[arg-type]
            location=settings.backup_es_fs_location,
        )

    def body_settings(self) -> dict[str, Any]:
        if self.type == "fs":
            return {"location": self.location, "compress": True}
        settings = {"bucket": self.bucket, "client": self.client}
        if self.base_path:
            settings["base_path"] = self.base_path
        return settings


def ensure_repository(es: Elasticsearch, repository: Repository) -> None:
    """Registers the repository (Elasticsearch verifies the nodes can write there); one of the
    same name must have the same type and settings."""
    try:
        current = es.snapshot.get_repository(name=repository.name)[repository.name]
    except NotFoundError:
        es.snapshot.create_repository(
            name=repository.name,
            repository={"type": repository.type, "settings": repository.body_settings()},
            verify=True,
        )
        log.info("snapshot repository %s (%s) registered", repository.name, repository.type)
        return
    wanted = {k: str(v).lower() for k, v in repository.body_settings().items()}
    have = {k: str(v).lower() for k, v in current.get("settings", {}).items() if k in wanted}
    if current.get("type") != repository.type or have != wanted:
        raise SnapshotFailed(
            f"repository {repository.name} is registered as {current.get('type')} "
            f"{current.get('settings')}, not {repository.type} {repository.body_settings()}"
        )


def family_indices(
    es: Elasticsearch, names: IndexNames, expand: str = "all"
) -> dict[str, dict[str, Any]]:
    """The family's indices (``expand``: "all", or "open" ones only) with their aliases and
    whether each is the write index."""
    try:
        found = es.indices.get_alias(index=f"{names.prefix}*", expand_wildcards=expand)
    except NotFoundError:
        return {}
    return {
        index: {alias: bool(spec.get("is_write_index")) for alias, spec in body["aliases"].items()}
        for index, body in sorted(found.items())
        if index.startswith(names.prefix) and index.removeprefix(names.prefix).isdigit()
    }


def doc_counts(es: Elasticsearch, indices: list[str]) -> dict[str, int]:
    es.indices.refresh(index=",".join(indices))
    return {index: int(es.count(index=index)["count"]) for index in indices}


def snapshot(
    es: Elasticsearch, repository: Repository, name: str, names: IndexNames
) -> dict[str, Any]:
    """Snapshots the family's indices with their aliases, waits for completion and checks it
    ended in SUCCESS with no failed shard; returns what the manifest records."""
    indices = family_indices(es, names, expand="open")  # a closed index cannot be snapshot
    if not indices:
        return {"snapshot": None, "indices": {}}
    ensure_repository(es, repository)
    counts = doc_counts(es, list(indices))
    response = es.snapshot.create(
        repository=repository.name,
        snapshot=name,
        indices=",".join(indices),
        include_global_state=False,
        wait_for_completion=True,
    )
    info = response["snapshot"]
    shards = info.get("shards", {})
    if info.get("state") != "SUCCESS" or shards.get("failed", 0):
        raise SnapshotFailed(
            f"snapshot {name}: {info.get('state')}, {shards.get('failed')} failed shards: "
            f"{info.get('failures')}"
        )
    status = es.snapshot.status(repository=repository.name, snapshot=name)["snapshots"][0]
    return {
        "snapshot": name,
        "repository": repository.model_dump(exclude_none=True),
        "state": info["state"],
        "uuid": info.get("uuid", ""),
        "shards": shards.get("total", 0),
        "snapshot_bytes": status["stats"]["total"]["size_in_bytes"],
        # what this snapshot added to the repository (the rest it shares with earlier ones)
        "snapshot_new_bytes": status["stats"]["incremental"]["size_in_bytes"],
        "indices": {
            index: {"docs": counts[index], "aliases": aliases} for index, aliases in indices.items()
        },
    }


def delete_snapshot(es: Elasticsearch, repository: str, name: str) -> None:
    """Deletes a snapshot; one that is gone already (or a repository no longer registered) is
    not an error."""
    try:
        es.snapshot.delete(repository=repository, snapshot=name)
    except NotFoundError:
        log.info("snapshot %s/%s already gone", repository, name)


def restore(
    es: Elasticsearch, recorded: dict[str, Any], names: IndexNames, replicas: int = 0
) -> dict[str, int]:
    """Restores the recorded snapshot's indices and aliases into a cluster with none of the
    family's indices (``clear`` first), checks every index holds the recorded number of
    documents and both aliases point as they did, and puts the index template back; returns
    the restored counts."""
    repository = Repository.model_validate(recorded["repository"])
    ensure_repository(es, repository)
    name = recorded["snapshot"]
    found = es.snapshot.get(repository=repository.name, snapshot=name)["snapshots"]
    if not found or found[0].get("state") != "SUCCESS":
        raise SnapshotFailed(f"snapshot {repository.name}/{name} is missing or not SUCCESS")
    indices = list(recorded["indices"])
    es.snapshot.restore(
        repository=repository.name,
        snapshot=name,
        indices=",".join(indices),
        include_aliases=True,
        include_global_state=False,
        wait_for_completion=True,
    )
    es.cluster.health(index=",".join(indices), wait_for_status="yellow", timeout="60s")
    counts = doc_counts(es, indices)
    expected = {index: spec["docs"] for index, spec in recorded["indices"].items()}
    if counts != expected:
        raise SnapshotFailed(f"restored {counts} documents, the backup recorded {expected}")
    restored = family_indices(es, names)
    if {i: restored.get(i) for i in indices} != {
        i: spec["aliases"] for i, spec in recorded["indices"].items()
    }:
        raise SnapshotFailed(f"aliases after the restore: {restored}")
    ensure_template(es, names, replicas)
    log.info("restored %s (read alias -> %s)", indices, alias_targets(es, names.read_alias))
    return counts


def clear(es: Elasticsearch, names: IndexNames) -> list[str]:
    """Deletes the family's indices (ours: named ``<base>-v<N>``) so a snapshot can be restored
    over them; returns their names."""
    indices = list(family_indices(es, names))
    if indices:
        es.indices.delete(index=",".join(indices))
    return indices

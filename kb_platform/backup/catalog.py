"""The backup root: one folder per backup, named by its id (UTC time of its start plus a short
random tail, so ids sort by time and two backups in one second do not collide)."""

from __future__ import annotations

import fcntl
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from kb_platform.backup import manifest
from kb_platform.backup.manifest import Manifest

LOCK = ".lock"


class BackupNotFound(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    """A folder under the root; ``manifest`` None when it has none (a backup that died at once)."""

    folder: Path
    manifest: Manifest | None

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def complete(self) -> bool:
        return self.manifest is not None and self.manifest.status == "complete"

    @property
    def started_at(self) -> datetime:
        if self.manifest is not None:
            return datetime.fromisoformat(self.manifest.started_at)
        return datetime.strptime(self.id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def new_id(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def entries(root: Path) -> list[Entry]:
    """The backups under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            read = manifest.read(folder)
        except (FileNotFoundError, ValidationError, ValueError):
            read = None
        found.append(Entry(folder, read))
    return sorted(found, key=lambda e: (e.started_at, e.id), reverse=True)


def resolve(root: Path, backup_id: str) -> Entry:
    """A complete backup by id, or the newest complete one for ``latest``."""
    complete = [e for e in entries(root) if e.complete]
    if backup_id == "latest":
        if not complete:
            raise BackupNotFound(f"no complete backup under {root}")
        return complete[0]
    for entry in complete:
        if entry.id == backup_id:
            return entry
    raise BackupNotFound(f"no complete backup {backup_id} under {root}")


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """One backup or restore at a time per root (an advisory lock on ``root/.lock``)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"another backup or restore holds {root / LOCK}") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

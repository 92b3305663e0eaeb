"""A backup's ``manifest.json``: what was backed up, when, with which versions, and the size and
sha256 of every file the backup folder holds, so a restore can prove the files intact first.

The manifest is written twice: with ``status: running`` when the backup starts (so retention
knows the Elasticsearch snapshot of a backup that died half-way) and ``status: complete`` at
the end. Only complete backups are restored from.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1024 * 1024


class BackupCorrupt(Exception):
    """A backup file is missing or does not match its manifest's size or checksum."""


class FileEntry(BaseModel):
    path: str  # relative to the backup folder
    size: int
    sha256: str


class Part(BaseModel):
    """One part of the stack: its files in the backup folder and what it recorded about itself."""

    seconds: float
    at: str | None = None  # ISO 8601, UTC: when this part was taken
    files: list[FileEntry] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files) + int(self.details.get("snapshot_bytes", 0))


class Manifest(BaseModel):
    format: int = FORMAT
    id: str
    status: Literal["running", "complete"] = "running"
    started_at: str  # ISO 8601, UTC
    finished_at: str | None = None
    seconds: float | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    stack: dict[str, Any] = Field(default_factory=dict)  # names the backup was taken of
    elasticsearch_snapshot: dict[str, str] | None = None  # {"repository", "snapshot"}
    parts: dict[str, Part] = Field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(part.bytes for part in self.parts.values())

    def files(self) -> list[FileEntry]:
        return [entry for part in self.parts.values() for entry in part.files]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def copy_hashed(source: BinaryIO, target: Path) -> tuple[int, str]:
    """Copies a stream into ``target`` (a new file); returns its size and sha256."""
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        while block := source.read(CHUNK):
            digest.update(block)
            out.write(block)
            size += len(block)
    return size, digest.hexdigest()


def entry_for(folder: Path, path: Path) -> FileEntry:
    """The manifest entry of a file already written into the backup folder."""
    return FileEntry(
        path=path.relative_to(folder).as_posix(), size=path.stat().st_size, sha256=sha256_file(path)
    )


def write(folder: Path, manifest: Manifest) -> None:
    """Writes the manifest atomically (a reader sees the old or the new one, never half)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest-")
    with os.fdopen(fd, "w") as handle:
        handle.write(manifest.model_dump_json(indent=2))
    os.replace(tmp, folder / MANIFEST)


def read(folder: Path) -> Manifest:
    return Manifest.model_validate_json((folder / MANIFEST).read_text())


def verify(folder: Path, manifest: Manifest) -> None:
    """Checks every file the manifest lists: present, same size, same sha256."""
    for entry in manifest.files():
        path = folder / entry.path
        if not path.is_file():
            raise BackupCorrupt(f"{manifest.id}: {entry.path} is missing")
        if path.stat().st_size != entry.size:
            raise BackupCorrupt(
                f"{manifest.id}: {entry.path} has {path.stat().st_size} bytes, "
                f"the manifest says {entry.size}"
            )
        if sha256_file(path) != entry.sha256:
            raise BackupCorrupt(f"{manifest.id}: {entry.path} does not match its sha256")

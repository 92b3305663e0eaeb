"""The object store: originals, page renders and images (``blobs/``), Parquet tables (chunks,
embeddings: ``tables/``), pickled assets (``assets/``) and CLIP checkpoints (``clip/``) under the
data dir, each file copied into the backup with its size and sha256.

Local folders only: the S3 bucket of production is not copied by this code (s3fs is not
installed here and no S3 endpoint can be reached to test against); production protects it with
bucket versioning and replication (docs/disaster-recovery.md).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from kb_platform.backup.manifest import FileEntry, copy_hashed

log = logging.getLogger(__name__)

SKIPPED_PREFIXES = (".tmp-",)  # LocalBlobStore's half-written files


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for folder, _, names in os.walk(root):
        found += [Path(folder) / name for name in names if not name.startswith(SKIPPED_PREFIXES)]
    return sorted(found)


def is_empty(trees: dict[str, Path]) -> bool:
    return not any(_files(root) for root in trees.values())


def backup(trees: dict[str, Path], folder: Path) -> list[FileEntry]:
    """Copies every file of each named tree to ``objects/<name>/<relative path>``, hashing as it
    copies; a file that disappears meanwhile (a temporary one renamed away) is skipped."""
    entries = []
    for name, root in trees.items():
        for path in _files(root):
            relative = f"objects/{name}/{path.relative_to(root).as_posix()}"
            try:
                with path.open("rb") as source:
                    size, digest = copy_hashed(source, folder / relative)
            except FileNotFoundError:
                log.info("%s vanished during the backup; skipped", path)
                continue
            entries.append(FileEntry(path=relative, size=size, sha256=digest))
    return entries


def restore(trees: dict[str, Path], folder: Path, entries: list[FileEntry]) -> None:
    """Makes each tree hold exactly the backed-up files: copies them in (already verified) and
    deletes files the backup does not have."""
    wanted: set[Path] = set()
    for entry in entries:
        _, name, relative = entry.path.split("/", 2)
        if name not in trees:
            raise ValueError(f"the backup has a tree {name!r} this stack does not configure")
        target = (trees[name] / relative).resolve()
        if not target.is_relative_to(trees[name].resolve()):
            raise ValueError(f"{entry.path} escapes its tree")
        wanted.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / entry.path, target)
    for root in trees.values():
        for path in _files(root):
            if path.resolve() not in wanted:
                path.unlink()

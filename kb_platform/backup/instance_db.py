"""The Dagster instance's database: runs, event logs (materializations, dynamic partitions,
asset checks), schedules and sensor cursors (the ingest sensor's offsets, the dead-letter
ledger). Which database is read from ``$DAGSTER_HOME/dagster.yaml``:

- SQLite (local): the ``*.db`` files under ``history/`` and ``schedules/`` of the storage's
  base dir, copied with SQLite's online backup API, so a running daemon or webserver may keep
  writing (each copy is one consistent state of its file; WAL is handled by SQLite);
- PostgreSQL (production): ``pg_dump -Fc`` and ``pg_restore --clean --if-exists``, the
  password passed in the environment (``PGPASSWORD``), never on the command line.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kb_platform.backup.manifest import FileEntry, entry_for

log = logging.getLogger(__name__)

SQLITE_FOLDERS = ("history", "schedules")  # Dagster's SQLite layout under the base dir
DUMP = "dagster.dump"


class InstanceNotEmpty(Exception):
    pass


def _value(raw: Any) -> str:
    """A dagster.yaml value: literal or ``{env: NAME}``."""
    if isinstance(raw, dict) and "env" in raw:
        value = os.environ.get(raw["env"])
        if value is None:
            raise ValueError(f"dagster.yaml reads {raw['env']}, which is not set")
        return value
    return str(raw)


@dataclass(frozen=True)
class SqliteInstance:
    base_dir: Path
    kind: str = "sqlite"

    def db_files(self) -> list[Path]:
        return sorted(
            path
            for folder in SQLITE_FOLDERS
            if (self.base_dir / folder).is_dir()
            for path in (self.base_dir / folder).rglob("*.db")
        )

    def has_runs(self) -> bool:
        runs = self.base_dir / "history" / "runs.db"
        if not runs.is_file():
            return False
        with _open(runs, readonly=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'"
            ).fetchone()
            return bool(exists and conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    def backup(self, folder: Path) -> tuple[list[FileEntry], dict[str, Any]]:
        entries = []
        for path in self.db_files():
            target = folder / "instance" / path.relative_to(self.base_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            with _open(path, readonly=True) as source, _open(target) as copy:
                source.backup(copy)
            entries.append(entry_for(folder, target))
        return entries, {"kind": self.kind, "sqlite": sqlite3.sqlite_version}

    def restore(self, folder: Path, entries: list[FileEntry]) -> None:
        """Writes each backed-up file over its place (through the backup API, so a stale
        connection of this process sees the new content) and deletes database files the
        backup does not have."""
        wanted = set()
        for entry in entries:
            relative = Path(entry.path).relative_to("instance")
            target = self.base_dir / relative
            wanted.add(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            with _open(folder / entry.path, readonly=True) as source, _open(target) as copy:
                source.backup(copy)
        for path in self.db_files():
            if path not in wanted:
                for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    stale.unlink(missing_ok=True)

    def describe(self) -> str:
        return f"SQLite under {self.base_dir}"


class _open:
    """A sqlite3 connection that is closed (not only committed) on exit."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self.conn = sqlite3.connect(uri, uri=True, timeout=30)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *_: object) -> None:
        self.conn.close()


@dataclass(frozen=True)
class PostgresInstance:
    host: str
    port: int
    user: str
    password: str
    db: str
    kind: str = "postgres"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def _args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.db]

    def _connect(self) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.db
        )

    def has_runs(self) -> bool:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('public.runs') IS NOT NULL")
                if not cur.fetchone()[0]:
                    return False
                cur.execute("SELECT count(*) FROM runs")
                return bool(cur.fetchone()[0])
        finally:
            conn.close()

    def server_version(self) -> str:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return str(cur.fetchone()[0])
        finally:
            conn.close()

    def backup(self, folder: Path) -> tuple[list[FileEntry], dict[str, Any]]:
        target = folder / "instance" / DUMP
        target.parent.mkdir(parents=True, exist_ok=True)
        _check(["pg_dump", *self._args(), "-Fc", "-f", str(target)], self._env())
        version = _check(["pg_dump", "--version"], self._env()).strip()
        details = {"kind": self.kind, "pg_dump": version, "server": self.server_version()}
        return [entry_for(folder, target)], details

    def restore(self, folder: Path, entries: list[FileEntry]) -> None:
        (entry,) = entries
        _check(
            [
                "pg_restore",
                *self._args(),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                str(folder / entry.path),
            ],
            self._env(),
        )

    def describe(self) -> str:
        return f"PostgreSQL {self.user}@{self.host}:{self.port}/{self.db}"


def _check(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


InstanceDb = SqliteInstance | PostgresInstance


def from_dagster_home(home: Path) -> InstanceDb:
    """The database behind the instance configured in ``home/dagster.yaml``."""
    config_file = home / "dagster.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    storage = (config or {}).get("storage") or {}
    if "postgres" in storage:
        db = storage["postgres"].get("postgres_db")
        if db is None:
            raise ValueError(f"{config_file}: give postgres_db (fields), not postgres_url")
        return PostgresInstance(
            host=_value(db["hostname"]),
            port=int(_value(db.get("port", 5432))),
            user=_value(db["username"]),
            password=_value(db["password"]),
            db=_value(db["db_name"]),
        )
    for kind in ("sqlite", "custom"):
        base = (storage.get(kind) or {}).get("config") if kind == "custom" else storage.get(kind)
        if base and "base_dir" in base:
            return SqliteInstance(Path(_value(base["base_dir"])))
    if storage or any(k in (config or {}) for k in ("run_storage", "event_log_storage")):
        raise ValueError(f"{config_file}: storage not understood by the backup: {storage}")
    return SqliteInstance(home)

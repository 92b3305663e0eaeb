"""``PooledSqliteStorage``: Dagster's SQLite instance storage without the cost per write.

Configured in ``dagster.yaml`` (``storage: custom:``) for the local and single-host
deployments; production uses PostgreSQL (deploy/dagster/dagster.prod.yaml). Dagster's own
SQLite storages build a new SQLAlchemy engine and open a new connection for every statement
and, in WAL mode with SQLite's default ``synchronous=FULL``, wait for an fsync on every commit:
about 10 ms per event here, a third of a run worker's time (py-spy, issue 12). These subclasses
keep one pooled engine per database file and process and commit with ``synchronous=NORMAL``,
which in WAL mode is still safe from corruption (a power cut can lose the last commits, not
the database); the schema, files and every query stay Dagster's, so the same ``DAGSTER_HOME``
opens with either storage.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
import yaml
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from dagster._utils import mkdir_p
from sqlalchemy.engine import Connection, Engine

MAX_ENGINES = 16  # per process: the instance's few databases and the latest runs' shards

_engines: OrderedDict[tuple[int, str], Engine] = OrderedDict()
_engines_lock = threading.Lock()


def pooled_engine(conn_string: str) -> Engine:
    """This process's engine for one SQLite file (a forked child makes its own: pooled
    connections must not cross a fork). The event log has a file per run, so engines are kept
    for the most recently used files only: an evicted engine closes its connections (one still
    in use closes when it is returned), and a process's open files stay bounded."""
    key = (os.getpid(), conn_string)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            _engines.move_to_end(key)
            return engine
        engine = db.create_engine(
            conn_string,
            pool_size=2,
            max_overflow=8,
            # a pooled connection is handed to one thread at a time, never shared at once
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        db.event.listen(engine, "connect", _tune_connection)
        _engines[key] = engine
        while len(_engines) > MAX_ENGINES:
            _, evicted = _engines.popitem(last=False)
            evicted.dispose()
        return engine


def _tune_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's version holds this lock around the whole transaction too: the event log
        # watcher thread and the writer share the storage.
        with self._db_lock:
            engine = pooled_engine(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with _transaction(engine) as conn:
                yield conn


class _PooledConnections:
    """``connect`` over the pooled engine, for Dagster's storages of one SQLite file (runs,
    schedules), and ``from_config_value`` that builds this class, not Dagster's."""

    _conn_string: str

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> Any:
        return cls.from_local(inst_data=inst_data, **config_value)  # type: ignore[attr-defined]

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with _transaction(pooled_engine(self._conn_string)) as conn:
            yield conn


class PooledSqliteRunStorage(_PooledConnections, SqliteRunStorage):
    pass


class PooledSqliteScheduleStorage(_PooledConnections, SqliteScheduleStorage):
    pass


class PooledSqliteStorage(DagsterSqliteStorage):
    """The three pooled storages under one ``base_dir``, laid out as Dagster's default."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = PooledSqliteScheduleStorage.from_local(
            _schedule_directory(base_dir)
        )
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Any
    ) -> PooledSqliteStorage:
        mkdir_p(config_value["base_dir"])
        return cls(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return _storage_data("PooledSqliteEventLogStorage", _event_logs_directory(self.base_dir))

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        return _storage_data("PooledSqliteRunStorage", _runs_directory(self.base_dir))

    @property
    def schedule_storage_data(self) -> ConfigurableClassData | None:
        return _storage_data("PooledSqliteScheduleStorage", _schedule_directory(self.base_dir))


def _storage_data(class_name: str, base_dir: str) -> ConfigurableClassData:
    return ConfigurableClassData(__name__, class_name, yaml.safe_dump({"base_dir": base_dir}))

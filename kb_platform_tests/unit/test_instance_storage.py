"""The pooled SQLite instance storage of dagster.yaml: Dagster's files and schema, one
connection per database file instead of one per write, no fsync per commit, and several
processes writing one instance at once as the daemon, the run workers and the webserver do."""

import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as db
from dagster import AssetKey, AssetMaterialization, DagsterInstance, asset, materialize
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry

from kb_platform.config import REPO_ROOT
from kb_platform.instance_storage import (
    MAX_ENGINES,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
    PooledSqliteScheduleStorage,
    pooled_engine,
)

WRITES_PER_PROCESS = 150


def _repo_instance(home: Path, monkeypatch: pytest.MonkeyPatch) -> DagsterInstance:
    """An instance of the repo's own dagster.yaml in ``home``, as `make` sets DAGSTER_HOME up."""
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return DagsterInstance.from_config(str(home))


def _materialization(run_id: str, n: int) -> EventLogEntry:
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        "job",
        event_specific_data=StepMaterializationData(
            AssetMaterialization(AssetKey("shared"), metadata={"n": n})
        ),
    )
    return EventLogEntry(
        error_info=None,
        level=20,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        dagster_event=event,
    )


def _write_materializations(base_dir: str, run_id: str) -> None:
    storage = PooledSqliteEventLogStorage(base_dir)
    for n in range(WRITES_PER_PROCESS):
        storage.store_event(_materialization(run_id, n))


@asset
def number() -> int:
    return 1


def test_the_repo_instance_uses_the_pooled_storages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _repo_instance(tmp_path, monkeypatch) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        assert isinstance(instance.schedule_storage, PooledSqliteScheduleStorage)


def test_dagsters_own_sqlite_storage_reads_what_the_pooled_one_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _repo_instance(tmp_path, monkeypatch) as instance:
        result = materialize([number], instance=instance)
        assert result.success
    with DagsterInstance.local_temp(
        tempdir=str(tmp_path), overrides={"storage": {"sqlite": {"base_dir": str(tmp_path)}}}
    ) as plain:
        assert type(plain.event_log_storage).__name__ == "SqliteEventLogStorage"
        run = plain.get_run_by_id(result.run_id)
        assert run is not None and run.is_success
        assert plain.get_latest_materialization_event(number.key) is not None
        assert len(plain.all_logs(result.run_id)) == len(result.all_events) + 2  # + run start/end


def test_writes_reuse_a_connection_and_commit_without_an_fsync(tmp_path: Path) -> None:
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    storage.store_event(_materialization("run-a", 0))  # creates the shard, fills the pool
    engine = pooled_engine(storage.conn_string_for_shard("run-a"))
    connects: list[int] = []
    db.event.listen(engine, "connect", lambda *_: connects.append(1))
    for n in range(1, 50):
        storage.store_event(_materialization("run-a", n))
    assert connects == []
    assert pooled_engine(storage.conn_string_for_shard("run-a")) is engine
    with storage.run_connection("run-a") as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_processes_writing_one_instance_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_write_materializations, args=(str(tmp_path), f"run-{i}"))
        for i in range(3)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    records = storage.fetch_materializations(AssetKey("shared"), limit=10_000).records
    assert len(records) == 3 * WRITES_PER_PROCESS


def test_a_process_keeps_few_files_open_however_many_runs_it_writes(tmp_path: Path) -> None:
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    open_before = len(os.listdir("/proc/self/fd"))
    for run in range(3 * MAX_ENGINES):  # the event log has a database file per run
        storage.store_event(_materialization(f"run-{run}", 0))
    # each kept engine holds a connection or two, each the file, its WAL and shared memory
    assert len(os.listdir("/proc/self/fd")) - open_before <= MAX_ENGINES * 2 * 3

"""The parts of a backup that need no service: manifests and checksums, the object store's
copy and mirror-restore, SQLite's online backup under a writer, reading the instance database
from dagster.yaml, and the snapshot repository settings."""

import sqlite3
import threading
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kb_platform.backup import instance_db, manifest, object_store
from kb_platform.backup.es_snapshots import Repository
from kb_platform.backup.manifest import BackupCorrupt, Manifest, Part
from kb_platform.config import REPO_ROOT, Settings


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_object_store_round_trip_is_exact_and_checked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name, content in {
        "blobs/raw/abc": b"original",
        "tables/text_embeddings/abc.parquet": bytes(range(256)) * 100,
        "blobs/raw/.tmp-xyz": b"half-written",
    }.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    folder = tmp_path / "backup"
    files = object_store.backup({"data": data}, folder)
    assert sorted(f.path for f in files) == [
        "objects/data/blobs/raw/abc",
        "objects/data/tables/text_embeddings/abc.parquet",
    ]
    record = Manifest(id="x", started_at="2026-12-30T00:00:00+00:00", status="complete")
    record.parts["objects"] = Part(seconds=0.0, files=files)
    manifest.write(folder, record)
    assert manifest.read(folder) == record
    manifest.verify(folder, record)

    target = tmp_path / "fresh"
    (target / "stale").mkdir(parents=True)
    (target / "stale" / "file").write_bytes(b"not in the backup")
    assert not object_store.is_empty({"data": target})
    object_store.restore({"data": target}, folder, files)
    expected = {k: v for k, v in _tree(data).items() if ".tmp-" not in k}
    assert _tree(target) == expected

    victim = folder / files[0].path
    victim.write_bytes(victim.read_bytes()[:-1] + b"?")
    with pytest.raises(BackupCorrupt, match="sha256"):
        manifest.verify(folder, record)
    victim.write_bytes(b"short")
    with pytest.raises(BackupCorrupt, match="bytes"):
        manifest.verify(folder, record)


def test_object_store_restore_refuses_a_path_outside_its_tree(tmp_path: Path) -> None:
    (tmp_path / "backup" / "objects" / "data").mkdir(parents=True)
    bad = manifest.FileEntry(path="objects/data/../../escape", size=0, sha256="")
    with pytest.raises(ValueError, match="escapes"):
        object_store.restore({"data": tmp_path / "target"}, tmp_path / "backup", [bad])


def test_sqlite_online_backup_is_consistent_while_a_writer_commits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "history").mkdir(parents=True)
    db = home / "history" / "runs.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER)")
    stop = threading.Event()

    def write() -> None:  # every transaction keeps a == b
        conn = sqlite3.connect(db, timeout=30)
        n = 0
        while not stop.is_set():
            with conn:
                conn.execute("INSERT INTO runs (a, b) VALUES (?, ?)", (n, n))
                conn.execute("UPDATE runs SET a = a + 1, b = b + 1 WHERE id % 7 = 0")
            n += 1
        conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        database = instance_db.SqliteInstance(home)
        while not database.has_runs():
            pass
        files, details = database.backup(tmp_path / "backup")
    finally:
        stop.set()
        writer.join()
    assert details["kind"] == "sqlite" and [f.path for f in files] == ["instance/history/runs.db"]
    copy = sqlite3.connect(tmp_path / "backup" / files[0].path)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = copy.execute("SELECT count(*), sum(a != b) FROM runs").fetchone()
    copy.close()
    assert rows[0] > 0 and rows[1] == 0

    fresh = instance_db.SqliteInstance(tmp_path / "fresh")
    (tmp_path / "fresh" / "history" / "runs").mkdir(parents=True)
    (tmp_path / "fresh" / "history" / "runs" / "stale.db").write_bytes(b"")
    fresh.restore(tmp_path / "backup", files)
    assert [p.name for p in fresh.db_files()] == ["runs.db"]
    assert fresh.has_runs()


def test_the_instance_database_is_read_from_dagster_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(local))
    assert instance_db.from_dagster_home(local) == instance_db.SqliteInstance(local)
    assert instance_db.from_dagster_home(tmp_path / "none") == instance_db.SqliteInstance(
        tmp_path / "none"
    )

    prod = tmp_path / "prod"
    prod.mkdir()
    prod_yaml = REPO_ROOT / "deploy" / "dagster" / "dagster.prod.yaml"
    (prod / "dagster.yaml").write_text(prod_yaml.read_text())
    for key, value in {
        "KB_PG_HOST": "db.internal",
        "KB_PG_PORT": "5432",
        "KB_PG_USER": "dagster",
        "KB_PG_PASSWORD": "secret",
        "KB_PG_DB": "dagster",
    }.items():
        monkeypatch.setenv(key, value)
    assert instance_db.from_dagster_home(prod) == instance_db.PostgresInstance(
        "db.internal", 5432, "dagster", "secret", "dagster"
    )
    monkeypatch.delenv("KB_PG_PASSWORD")
    with pytest.raises(ValueError, match="KB_PG_PASSWORD"):
        instance_db.from_dagster_home(prod)

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"mysql": {}}}))
    with pytest.raises(ValueError, match="not understood"):
        instance_db.from_dagster_home(odd)


def test_repository_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = Repository.from_settings(Settings())
    assert fs.type == "fs" and fs.body_settings() == {"location": "kb-backups", "compress": True}

    monkeypatch.setenv("KB_BACKUP_ES_REPOSITORY_TYPE", "s3")
    monkeypatch.setenv("KB_BACKUP_ES_S3_BUCKET", "kb-prod-snapshots")
    monkeypatch.setenv("KB_BACKUP_ES_S3_BASE_PATH", "elasticsearch/kb-chunks")
    s3 = Repository.from_settings(Settings())
    assert s3.body_settings() == {
        "bucket": "kb-prod-snapshots",
        "client": "default",
        "base_path": "elasticsearch/kb-chunks",
    }
    for bad in ("", "UPPER", "a", "under_score", "x" * 64, "a..b"):
        monkeypatch.setenv("KB_BACKUP_ES_S3_BUCKET", bad)
        with pytest.raises(ValidationError, match="bucket"):
            Repository.from_settings(Settings())
    monkeypatch.setenv("KB_BACKUP_ES_S3_BUCKET", "kb-prod-snapshots")
    monkeypatch.setenv("KB_BACKUP_ES_S3_BASE_PATH", "/absolute")
    with pytest.raises(ValidationError, match="base_path"):
        Repository.from_settings(Settings())

    monkeypatch.setenv("KB_BACKUP_ES_REPOSITORY_TYPE", "nfs")
    with pytest.raises(ValidationError, match="type"):
        Repository.from_settings(Settings())
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        Repository(name="kb", type="fs", location="../outside")
    with pytest.raises(ValidationError, match="repository name"):
        Repository(name="Has Space", type="fs", location="x")


def test_backup_root_defaults_beside_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_DATA_DIR", "/srv/kb/data")
    assert Settings().backup_root == Path("/srv/kb/.kb-backups")
    monkeypatch.setenv("KB_BACKUP_DIR", "/mnt/backups")
    assert Settings().backup_root == Path("/mnt/backups")

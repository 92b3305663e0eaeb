"""Retention of backups: the newest N and those younger than D days stay, the newest complete
backup always stays, and a backup that never completed goes once a newer one is good."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kb_platform.backup import catalog, manifest
from kb_platform.backup.catalog import Entry
from kb_platform.backup.manifest import Manifest
from kb_platform.backup.retention import to_delete

NOW = datetime(2026, 12, 30, 12, tzinfo=UTC)


def _backups(states: str) -> list[Entry]:
    """Newest first, a day apart: 'c' complete, 'r' running (never completed), '-' no manifest."""
    found = []
    for age, state in enumerate(states):
        at = NOW - timedelta(days=age)
        backup_id = catalog.new_id(at)
        record = None
        if state != "-":
            status = "complete" if state == "c" else "running"
            record = Manifest(id=backup_id, started_at=at.isoformat(), status=status)
        found.append(Entry(Path("/backups") / backup_id, record))
    return found


def _ages(backups: list[Entry], deleted: list[Entry]) -> list[int]:
    return [backups.index(e) for e in deleted]


def test_keep_last_keeps_the_newest_n_complete_ones() -> None:
    backups = _backups("ccccc")
    assert _ages(backups, to_delete(backups, keep_last=3, keep_days=None, now=NOW)) == [3, 4]


def test_keep_days_keeps_the_young_ones() -> None:
    backups = _backups("ccccc")
    assert _ages(backups, to_delete(backups, keep_last=None, keep_days=2.5, now=NOW)) == [3, 4]


def test_either_rule_keeps_a_backup() -> None:
    backups = _backups("ccccc")
    deleted = to_delete(backups, keep_last=1, keep_days=3, now=NOW)
    assert _ages(backups, deleted) == [4]


def test_the_newest_complete_backup_is_never_deleted() -> None:
    backups = _backups("rrccc")  # all complete ones older than keep_days
    deleted = to_delete(backups, keep_last=None, keep_days=0.5, now=NOW)
    assert _ages(backups, deleted) == [3, 4]  # 2 stays; the running ones are newer: kept


def test_unfinished_backups_go_once_a_newer_one_is_good() -> None:
    backups = _backups("rc-rcc")
    assert _ages(backups, to_delete(backups, keep_last=5, keep_days=None, now=NOW)) == [2, 3]


def test_nothing_is_deleted_without_a_complete_backup() -> None:
    assert to_delete(_backups("rr-r"), keep_last=1, keep_days=0, now=NOW) == []


def test_no_rule_keeps_every_complete_backup() -> None:
    backups = _backups("ccrc")
    assert _ages(backups, to_delete(backups, keep_last=None, keep_days=None, now=NOW)) == [2]


@pytest.mark.parametrize(("keep_last", "keep_days"), [(0, None), (None, -1.0)])
def test_nonsensical_rules_are_refused(keep_last: int | None, keep_days: float | None) -> None:
    with pytest.raises(ValueError, match="keep"):
        to_delete(_backups("cc"), keep_last=keep_last, keep_days=keep_days, now=NOW)


def test_the_catalog_lists_newest_first_and_resolves_latest_to_a_complete_one(
    tmp_path: Path,
) -> None:
    for entry in _backups("rcc-"):
        folder = tmp_path / entry.id
        folder.mkdir()
        if entry.manifest:
            manifest.write(folder, entry.manifest)
    listed = catalog.entries(tmp_path)
    assert [e.started_at for e in listed] == sorted((e.started_at for e in listed), reverse=True)
    assert [e.complete for e in listed] == [False, True, True, False]
    assert catalog.resolve(tmp_path, "latest").id == listed[1].id
    assert catalog.resolve(tmp_path, listed[2].id).id == listed[2].id
    with pytest.raises(catalog.BackupNotFound):
        catalog.resolve(tmp_path, listed[0].id)  # running: not restorable

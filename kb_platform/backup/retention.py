"""Which backups to delete after a good one: the policy (pure) and its application.

A complete backup is kept while it is one of the newest ``keep_last`` complete ones or younger
than ``keep_days`` (either rule keeps it; a rule left unset keeps nothing, both unset keep
all). The newest complete backup is always kept, whatever the rules say. A backup that never
completed is deleted once a newer complete one exists; a newer one may still be running and
is left alone. With no complete backup at all nothing is deleted.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta

from kb_platform.backup.catalog import Entry

log = logging.getLogger(__name__)


def to_delete(
    backups: list[Entry], keep_last: int | None, keep_days: float | None, now: datetime
) -> list[Entry]:
    """Of ``backups`` (any order), those the policy deletes, newest first."""
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, not {keep_last}")
    if keep_days is not None and keep_days < 0:
        raise ValueError(f"keep_days must not be negative, not {keep_days}")
    ordered = sorted(backups, key=lambda e: (e.started_at, e.id), reverse=True)
    complete = [e for e in ordered if e.complete]
    if not complete:
        return []
    newest = complete[0]
    if keep_last is None and keep_days is None:
        kept = {e.id for e in complete}
    else:
        kept = {newest.id, *(e.id for e in complete[: keep_last or 0])}
        if keep_days is not None:
            kept |= {e.id for e in complete if now - e.started_at <= timedelta(days=keep_days)}
    return [
        e
        for e in ordered
        if (e.complete and e.id not in kept)
        or (not e.complete and e.started_at < newest.started_at)
    ]


def delete(entry: Entry, delete_snapshot: Callable[[str, str], None]) -> None:
    """Deletes the backup's Elasticsearch snapshot (``delete_snapshot(repository, name)``, which
    must accept one that is gone already), then its folder."""
    snapshot = entry.manifest.elasticsearch_snapshot if entry.manifest else None
    if snapshot:
        delete_snapshot(snapshot["repository"], snapshot["snapshot"])
    shutil.rmtree(entry.folder)
    log.info("backup %s deleted (retention)", entry.id)

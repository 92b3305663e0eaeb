"""Which deployment's ingest sensor reads the ingest topics: a lease in the instance storage.

During a blue/green switch two code locations on one instance both run ``kafka_ingest_sensor``,
each with a cursor of its own, and Dagster's run keys only keep a sensor from requesting a
message twice within its own code location. The lease (one row of the instance's key-value
table, taken and renewed with a compare-and-set) lets one location read at a time; the other
skips its ticks until the holder has not renewed for ``ttl_s`` (it was removed or stopped).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as db
from dagster import DagsterInstance, SensorEvaluationContext
from dagster._core.storage.runs.schema import KeyValueStoreTable

LEASE_KEY = "kb/ingest-lease"
DEFAULT_TTL_S = 60.0


@dataclass(frozen=True)
class Lease:
    holder: str
    until: float  # epoch seconds

    def to_json(self) -> str:
        return json.dumps({"holder": self.holder, "until": self.until})

    @classmethod
    def from_json(cls, raw: str) -> Lease:
        data = json.loads(raw)
        return cls(str(data["holder"]), float(data["until"]))


def acquire(
    instance: DagsterInstance, holder: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None
) -> Lease:
    """Takes or renews the lease for ``holder``; returns the lease as it stands afterwards (held
    by someone else if ``holder`` did not get it)."""
    now = time.time() if now is None else now
    mine = Lease(holder, now + ttl_s)
    storage = instance.run_storage
    with storage.connect() as conn:  # type: ignore[attr-defined]
        row = conn.execute(
            db.select(KeyValueStoreTable.c.value).where(KeyValueStoreTable.c.key == LEASE_KEY)
        ).fetchone()
        if row is None:
            try:
                conn.execute(
                    KeyValueStoreTable.insert().values(key=LEASE_KEY, value=mine.to_json())
                )
                return mine
            except db.exc.IntegrityError:  # taken by another holder at the same moment
                return _held(instance)
        held = Lease.from_json(row[0])
        if held.holder != holder and held.until > now:
            return held
        swapped = conn.execute(
            KeyValueStoreTable.update()
            .where(KeyValueStoreTable.c.key == LEASE_KEY, KeyValueStoreTable.c.value == row[0])
            .values(value=mine.to_json())
        )
    return mine if swapped.rowcount == 1 else _held(instance)


def _held(instance: DagsterInstance) -> Lease:
    lease = current(instance)
    if lease is None:
        raise RuntimeError(f"{LEASE_KEY} vanished while it was being taken")
    return lease


def current(instance: DagsterInstance) -> Lease | None:
    raw = instance.run_storage.get_cursor_values({LEASE_KEY}).get(LEASE_KEY)
    return Lease.from_json(raw) if raw else None


def holder_of(context: SensorEvaluationContext) -> str:
    """The lease holder name of the code location a sensor evaluates in."""
    origin = context.code_location_origin
    return origin.location_name if origin is not None else "in-process"


def holds(instance: DagsterInstance, holder: str, now: float | None = None) -> bool:
    """Whether ``holder`` holds the lease now (without taking or renewing it): the sensors that
    act for every location (orphaned runs, dead-letter replays) act only in the reading one."""
    lease = current(instance)
    now = time.time() if now is None else now
    return lease is not None and lease.holder == holder and lease.until > now

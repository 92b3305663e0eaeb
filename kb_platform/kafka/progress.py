"""How far the sensors are with a set of produced messages (``kb-platform produce --follow``).

Counts come from the ledger (indexed, dead-lettered, parked, in flight, not read yet) and from
the messages' runs (how many ended failed, whether dead-lettered yet or not); the lag is the
age of the oldest unsettled message of the ingest topics (``kb_platform.kafka.lag``).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from kb_platform.kafka import ledger
from kb_platform.kafka.ledger import SETTLED, MessageState

# (topic, partition) -> the offsets produced there
Produced = dict[tuple[str, int], list[int]]


@dataclass(frozen=True)
class Snapshot:
    total: int
    counts: collections.Counter[MessageState]
    failed: int  # messages whose latest run failed

    @property
    def settled(self) -> int:
        return sum(self.counts[state] for state in SETTLED)

    @property
    def done(self) -> bool:
        return self.settled == self.total


def _latest_run_failed(runs: Sequence[DagsterRun]) -> set[int]:
    latest: dict[int, DagsterRunStatus] = {}
    for run in runs:  # newest first
        latest.setdefault(int(run.tags["kb/source-offset"]), run.status)
    return {offset for offset, status in latest.items() if status is DagsterRunStatus.FAILURE}


def snapshot(instance: DagsterInstance, produced: Produced) -> Snapshot:
    counts: collections.Counter[MessageState] = collections.Counter()
    failed = 0
    for (topic, partition), offsets in produced.items():
        span = range(min(offsets), max(offsets) + 1)
        read_until = ledger.read_position(instance, topic, partition)
        runs = ledger.source_runs(instance, topic, partition, span)
        states = ledger.classify(instance, topic, partition, span, read_until, runs)
        counts.update(states[offset] for offset in offsets)
        failed += len(_latest_run_failed(runs) & set(offsets))
    return Snapshot(sum(len(o) for o in produced.values()), counts, failed)


def eta_s(rate: float, remaining: int) -> float | None:
    """Seconds until the rest is settled at ``rate`` (messages/s; None before any settled)."""
    return remaining / rate if rate > 0 else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(
    current: Snapshot, elapsed_s: float, lag_s: float, eta: float | None, rate: float
) -> str:
    c = current.counts
    parts = [
        f"indexed {c[MessageState.INDEXED]}",
        f"failed {current.failed}",
        f"dead-lettered {c[MessageState.DEAD_LETTERED]}",
        f"parked {c[MessageState.PARKED]}",
        f"in flight {c[MessageState.IN_FLIGHT]}",
        f"not read yet {c[MessageState.UNREAD]}",
    ]
    if c[MessageState.UNACCOUNTED]:
        # read by a sensor tick whose run requests the daemon is still turning into runs; one
        # that stays so is what `kb-platform audit` reports as unaccounted
        parts.append(f"runs being created {c[MessageState.UNACCOUNTED]}")
    until = _duration(eta) if eta is not None else "-"
    return (
        f"[{_duration(elapsed_s)}] {current.settled}/{current.total} settled: {', '.join(parts)}"
        f" | lag {lag_s:.0f} s | {rate:.2f} docs/s | ETA {until}"
    )

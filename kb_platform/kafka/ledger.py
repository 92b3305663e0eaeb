"""Where every ingest message stands: the accounting behind committed offsets and the audit.

A message (``topic:partition:offset``) is *indexed* when the latest run for it succeeded,
*dead-lettered* when it went to a dead-letter topic (at intake or after its run failed for the
last time), *parked* when replays gave up on it, *in flight* while its run is queued, running
or about to be retried, and *unread* past the sensor's position. Anything else is
*unaccounted*, which the audit must never find. Dead letters and parking are recorded in the
Dagster instance's key-value store; run states come from the runs' ``kb/source`` tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

MARKER_PREFIX = "kb/ledger/"
READ_PREFIX = "kb/ledger-read/"
SETTLED_RUN_TAG = "kb/dead-lettered"


class MessageState(StrEnum):
    INDEXED = "indexed"
    DEAD_LETTERED = "dead_lettered"
    PARKED = "parked"
    IN_FLIGHT = "in_flight"
    UNREAD = "unread"
    UNACCOUNTED = "unaccounted"


SETTLED = {MessageState.INDEXED, MessageState.DEAD_LETTERED, MessageState.PARKED}
_FINAL_FAILURE = {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
MAX_SCAN = 5000  # offsets looked at per partition by one commit, lag or orphan scan
_TAG_CHUNK = 500  # tag values per runs query (SQLite's bound-parameter limit is far above)


def source_key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def record(instance: DagsterInstance, keys: Iterable[str], state: MessageState) -> None:
    """Marks messages as dead-lettered or parked (idempotent)."""
    values = {f"{MARKER_PREFIX}{key}": state.value for key in keys}
    if values:
        _set_cursor_values(instance, values)


def _set_cursor_values(instance: DagsterInstance, values: dict[str, str]) -> None:
    """Dagster's SQLite storage drops the new keys of a call that also updates existing ones
    (an insert-or-update per batch): existing and new keys are written in calls of their own."""
    existing = instance.run_storage.get_cursor_values(set(values))
    for part in (
        {k: v for k, v in values.items() if k in existing},
        {k: v for k, v in values.items() if k not in existing},
    ):
        if part:
            instance.run_storage.set_cursor_values(part)


def markers(instance: DagsterInstance, keys: list[str]) -> dict[str, MessageState]:
    stored = instance.run_storage.get_cursor_values({f"{MARKER_PREFIX}{k}" for k in keys})
    return {k.removeprefix(MARKER_PREFIX): MessageState(v) for k, v in stored.items()}


def source_runs(
    instance: DagsterInstance, topic: str, partition: int, offsets: Sequence[int]
) -> list[DagsterRun]:
    """The runs of one topic partition's messages at ``offsets`` (a range, or any offsets, by
    their ``kb/source`` tags), each offset's newest first: a lookup per chunk of offsets, so the
    cost follows the offsets asked about and not the instance's whole run history."""
    runs: list[DagsterRun] = []
    for start in range(0, len(offsets), _TAG_CHUNK):
        keys = [source_key(topic, partition, o) for o in offsets[start : start + _TAG_CHUNK]]
        runs += instance.get_runs(RunsFilter(tags={"kb/source": keys}))
    return runs


def requested(instance: DagsterInstance, keys: Sequence[str]) -> set[str]:
    """Of the messages ``keys``, those that have a run already (from any code location: run keys
    only deduplicate within one) or a dead-letter or parking marker."""
    found = set(markers(instance, list(keys)))
    for start in range(0, len(keys), _TAG_CHUNK):
        chunk = list(keys[start : start + _TAG_CHUNK])
        found |= {
            r.tags["kb/source"] for r in instance.get_runs(RunsFilter(tags={"kb/source": chunk}))
        }
    return found


def run_states(runs: Sequence[DagsterRun]) -> dict[int, MessageState]:
    """The state each offset's newest run gives it (offsets without runs are absent); ``runs``
    are one partition's ``source_runs``."""
    states: dict[int, MessageState] = {}
    for run in reversed(runs):  # oldest first, so a newer run's state wins
        offset = int(run.tags["kb/source-offset"])
        if run.status is DagsterRunStatus.SUCCESS:
            state = MessageState.INDEXED
        elif run.status in _FINAL_FAILURE and run.tags.get(SETTLED_RUN_TAG) == "true":
            state = MessageState.DEAD_LETTERED
        else:
            state = MessageState.IN_FLIGHT  # queued, running, or failed and not yet dead-lettered
        if states.get(offset) is not MessageState.INDEXED:  # a success stays a success
            states[offset] = state
    return states


def record_read_positions(instance: DagsterInstance, next_offsets: dict[str, int]) -> None:
    """Where the ingest sensor reads next, per ``topic:partition`` (for commits and the audit)."""
    if next_offsets:
        _set_cursor_values(
            instance, {f"{READ_PREFIX}{key}": str(offset) for key, offset in next_offsets.items()}
        )


def read_position(instance: DagsterInstance, topic: str, partition: int) -> int:
    key = f"{READ_PREFIX}{topic}:{partition}"
    return int(instance.run_storage.get_cursor_values({key}).get(key, 0))


def classify(
    instance: DagsterInstance,
    topic: str,
    partition: int,
    offsets: Sequence[int],
    read_until: int,
    runs: Sequence[DagsterRun] | None = None,
) -> dict[int, MessageState]:
    """The state of each offset in ``offsets`` (a range, or sorted offsets); ``read_until`` is
    the sensor's next offset.
    ``runs``: ``source_runs`` over (at least) ``offsets`` when the caller has them already."""
    by_run = run_states(source_runs(instance, topic, partition, offsets) if runs is None else runs)
    marked = markers(instance, [source_key(topic, partition, o) for o in offsets])
    states = {}
    for offset in offsets:
        marker = marked.get(source_key(topic, partition, offset))
        if by_run.get(offset) is MessageState.INDEXED:
            states[offset] = MessageState.INDEXED  # e.g. a dead letter replayed successfully
        elif marker is not None:
            states[offset] = marker
        elif offset in by_run:
            states[offset] = by_run[offset]
        elif offset >= read_until:
            states[offset] = MessageState.UNREAD
        else:
            states[offset] = MessageState.UNACCOUNTED
    return states


def committable(committed: int, states: dict[int, MessageState]) -> int:
    """The offset the group may commit: past the contiguous settled prefix from ``committed``."""
    offset = committed
    while states.get(offset) in SETTLED:
        offset += 1
    return offset

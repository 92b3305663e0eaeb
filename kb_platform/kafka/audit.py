"""Accounting for every offset of every ingest partition (``kb-platform audit``), and the same
audit kept up to date between calls instead of redone (``IncrementalAudit``: the pipeline
exporter calls it at every scrape).

A full audit classifies every retained offset of every ingest partition, a ledger lookup per
offset: fine for ``kb-platform audit``, O(retained messages) for a scrape every 10 s. Settled
messages rarely change state, so each partition keeps the states of its *settled prefix* (from
the low watermark up to the first message that was not settled, one byte an offset) and a later
call classifies only what can still move:

- the offsets past the prefix (in flight, unread, and whatever arrived since), and
- the prefix's dead-lettered and parked offsets, which a replay can still index.

An indexed message stays indexed (the ledger lets a success win over any later state), so the
rest of the prefix is never looked at again; messages that retention deletes leave the prefix
from its front. ``audit()`` is an incremental audit that has seen nothing yet, so both give the
same rows (a test checks a long-lived one against fresh ones at every step).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from confluent_kafka import Consumer
from dagster import DagsterInstance

from kb_platform.kafka import ledger
from kb_platform.kafka.ingest_reader import topic_partitions
from kb_platform.kafka.ledger import SETTLED, MessageState


@dataclass(frozen=True)
class PartitionAudit:
    topic: str
    partition: int
    low: int
    high: int
    committed: int
    counts: dict[MessageState, int]
    first_unsettled: int | None = None  # from the committed offset on (what consumer lag waits on)

    @property
    def lag(self) -> int:
        return self.high - max(self.committed, self.low)

    @property
    def unaccounted(self) -> int:
        return self.counts.get(MessageState.UNACCOUNTED, 0)


def audit(consumer: Consumer, instance: DagsterInstance, topics: list[str]) -> list[PartitionAudit]:
    """Every retained offset of the topics' partitions classified (``kb-platform audit``): an
    incremental audit that has seen nothing yet."""
    return IncrementalAudit(instance).audit(consumer, topics)


_STATES = list(MessageState)
_CODE = {state: code for code, state in enumerate(_STATES)}
_REVISIT = {MessageState.DEAD_LETTERED, MessageState.PARKED}  # settled, may still be indexed


@dataclass
class _Partition:
    """One partition's settled prefix ``[base, base + len(codes))`` and the last tail seen."""

    base: int
    codes: bytearray = field(default_factory=bytearray)
    revisit: set[int] = field(default_factory=set)
    tail: dict[int, MessageState] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.base + len(self.codes)

    def trim(self, low: int) -> None:
        """Forgets the offsets retention deleted (below the low watermark)."""
        if low > self.base:
            del self.codes[: low - self.base]
            self.base = low
            self.revisit = {o for o in self.revisit if o >= low}

    def revise(self, states: dict[int, MessageState]) -> None:
        for offset, state in states.items():
            self.codes[offset - self.base] = _CODE[state]
            if state not in _REVISIT:
                self.revisit.discard(offset)

    def extend(self, tail: dict[int, MessageState], high: int) -> None:
        """Moves the settled front of ``tail`` (offsets from ``end`` on) into the prefix."""
        offset = self.end
        while offset < high and tail[offset] in SETTLED:
            self.codes.append(_CODE[tail[offset]])
            if tail[offset] in _REVISIT:
                self.revisit.add(offset)
            offset += 1
        self.tail = {o: s for o, s in tail.items() if o >= offset}

    def counts(self) -> dict[MessageState, int]:
        counts = collections.Counter(self.tail.values())
        for code, state in enumerate(_STATES):
            if held := self.codes.count(code):
                counts[state] += held
        return dict(counts)

    def state(self, offset: int) -> MessageState | None:
        if self.base <= offset < self.end:
            return _STATES[self.codes[offset - self.base]]
        return self.tail.get(offset)


class IncrementalAudit:
    """``audit()`` rows over the ingest topics, classifying only what may have changed since
    the last call. Not thread-safe: one caller at a time (the exporter holds a lock)."""

    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self.classified = 0  # offsets looked up in the ledger by the last call (for tests)

    def audit(self, consumer: Consumer, topics: list[str]) -> list[PartitionAudit]:
        partitions = topic_partitions(consumer, topics)
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in (consumer.committed(partitions, timeout=10) if partitions else [])
        }
        self.classified = 0
        report = []
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            held = self._held(tp.topic, tp.partition, low, high)
            read_until = ledger.read_position(self._instance, tp.topic, tp.partition)
            if held.revisit:
                again = sorted(held.revisit)
                held.revise(self._classify(tp.topic, tp.partition, again, read_until))
            tail = self._classify(tp.topic, tp.partition, range(held.end, high), read_until)
            held.extend(tail, high)
            start = max(committed.get((tp.topic, tp.partition), -1), low)
            first_unsettled = next(
                (o for o in range(max(start, held.end), high) if held.tail[o] not in SETTLED),
                None,
            )
            report.append(
                PartitionAudit(
                    tp.topic, tp.partition, low, high, start, held.counts(), first_unsettled
                )
            )
        return report

    def state(self, topic: str, partition: int, offset: int) -> MessageState | None:
        """A message's state as of the last ``audit`` (None: not on a partition it covered)."""
        held = self._partitions.get((topic, partition))
        return held.state(offset) if held else None

    def _held(self, topic: str, partition: int, low: int, high: int) -> _Partition:
        held = self._partitions.get((topic, partition))
        if held is None or held.end > high:  # new, or the topic was deleted and made again
            held = self._partitions[(topic, partition)] = _Partition(low)
        held.trim(low)
        return held

    def _classify(
        self, topic: str, partition: int, offsets: range | list[int], read_until: int
    ) -> dict[int, MessageState]:
        self.classified += len(offsets)
        return ledger.classify(self._instance, topic, partition, offsets, read_until)


def format_report(report: list[PartitionAudit]) -> str:
    columns = [
        MessageState.INDEXED,
        MessageState.DEAD_LETTERED,
        MessageState.PARKED,
        MessageState.IN_FLIGHT,
        MessageState.UNREAD,
        MessageState.UNACCOUNTED,
    ]
    header = f"{'topic:partition':<32} {'offsets':>8} " + " ".join(
        f"{c.value:>13}" for c in columns
    )
    lines = [header + f" {'lag':>6}"]
    for row in report:
        cells = " ".join(f"{row.counts.get(c, 0):>13}" for c in columns)
        name = f"{row.topic}:{row.partition}"
        lines.append(f"{name:<32} {row.high - row.low:>8} {cells} {row.lag:>6}")
    return "\n".join(lines)

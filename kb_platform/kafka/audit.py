"""Accounting for every offset of every ingest partition (``kb-platform audit``)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

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
    partitions = topic_partitions(consumer, topics)
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in (consumer.committed(partitions, timeout=10) if partitions else [])
    }
    report = []
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        read_until = ledger.read_position(instance, tp.topic, tp.partition)
        states = ledger.classify(instance, tp.topic, tp.partition, range(low, high), read_until)
        start = max(committed.get((tp.topic, tp.partition), -1), low)
        report.append(
            PartitionAudit(
                tp.topic,
                tp.partition,
                low,
                high,
                start,
                dict(collections.Counter(states.values())),
                next((o for o in range(start, high) if states[o] not in SETTLED), None),
            )
        )
    return report


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

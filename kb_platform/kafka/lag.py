"""Consumer lag in seconds: how long the oldest message not yet settled has been waiting.

Offsets behind (high watermark minus committed) say how much work is left, not how late it is,
and committed offsets trail settled work by the commit sensor's interval. The lag that matters
to a user is the age of the oldest message that is neither indexed nor dead-lettered nor
parked (ledger states), measured from its Kafka timestamp (the producer's create time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer
from dagster import DagsterInstance

from kb_platform.kafka import ledger
from kb_platform.kafka.ingest_reader import fetch_message, topic_partitions
from kb_platform.kafka.ledger import SETTLED


@dataclass(frozen=True)
class Waiting:
    topic: str
    partition: int
    offset: int
    produced_at: float  # epoch seconds

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.produced_at)


def oldest_unsettled(
    consumer: Consumer, instance: DagsterInstance, topics: list[str]
) -> Waiting | None:
    """The longest-waiting unsettled message over all partitions of ``topics``, if any."""
    partitions = topic_partitions(consumer, topics)
    committed = consumer.committed(partitions, timeout=10) if partitions else []
    first: list[tuple[str, int, int]] = []
    for tp in committed:
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        start = max(tp.offset, 0)
        read_until = ledger.read_position(instance, tp.topic, tp.partition)
        scan = range(start, min(high, start + ledger.MAX_SCAN))
        states = ledger.classify(instance, tp.topic, tp.partition, scan, read_until)
        offset = next((o for o in scan if states[o] not in SETTLED), None)
        if offset is not None:
            first.append((tp.topic, tp.partition, offset))
    return oldest_of(consumer, first)


def oldest_of(consumer: Consumer, positions: list[tuple[str, int, int]]) -> Waiting | None:
    """Of the messages at ``positions`` (topic, partition, offset: each partition's first
    unsettled one), the one produced first."""
    oldest: Waiting | None = None
    for topic, partition, offset in positions:
        message = fetch_message(consumer, topic, partition, offset)
        if message is None:
            continue  # deleted by retention meanwhile: nothing left to wait for
        produced_at = message.timestamp()[1] / 1000
        if oldest is None or produced_at < oldest.produced_at:
            oldest = Waiting(topic, partition, offset, produced_at)
    return oldest


def lag_seconds(consumer: Consumer, instance: DagsterInstance, topics: list[str]) -> float:
    """0 when every message is settled, else the age of the oldest unsettled one."""
    waiting = oldest_unsettled(consumer, instance, topics)
    return 0.0 if waiting is None else waiting.age_s()

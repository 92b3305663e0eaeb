"""Reading the ingest topics in bounded batches from explicit offsets (the sensor's cursor).

The consumer is assigned partitions directly (no group membership, so no rebalance wait in a
sensor tick); where the cursor has no offset for a partition, reading resumes from the consumer
group's committed offset, which only ever covers finished work.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

METADATA_TIMEOUT_S = 10.0
# Consumer settings for read_batch: partition ends are reported, so a read stops at them.
READER_CONFIG = {"enable.partition.eof": True}


def partition_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


@dataclass
class IngestCursor:
    """The next offset to read per topic-partition (``"topic:partition" -> offset``)."""

    next_offsets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: str | None) -> IngestCursor:
        return cls(dict(json.loads(raw)["next_offsets"])) if raw else cls()

    def to_json(self) -> str:
        return json.dumps({"next_offsets": dict(sorted(self.next_offsets.items()))})


def topic_partitions(consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
    """Every partition of the topics that exist now (new partitions appear on the next call)."""
    metadata = consumer.list_topics(timeout=METADATA_TIMEOUT_S)
    found = []
    for topic in topics:
        if topic in metadata.topics and metadata.topics[topic].error is None:
            found += [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
    return found


def start_positions(
    consumer: Consumer, partitions: list[TopicPartition], cursor: IngestCursor
) -> list[TopicPartition]:
    unknown = [
        tp for tp in partitions if partition_key(tp.topic, tp.partition) not in cursor.next_offsets
    ]
    committed = {
        partition_key(tp.topic, tp.partition): tp.offset
        for tp in (consumer.committed(unknown, timeout=METADATA_TIMEOUT_S) if unknown else [])
    }
    positions = []
    for tp in partitions:
        key = partition_key(tp.topic, tp.partition)
        offset = cursor.next_offsets.get(key, committed.get(key, OFFSET_BEGINNING))
        positions.append(
            TopicPartition(tp.topic, tp.partition, offset if offset >= 0 else OFFSET_BEGINNING)
        )
    return positions


def read_batch(
    consumer: Consumer,
    positions: list[TopicPartition],
    max_messages: int,
    timeout_s: float,
    idle_wait_s: float = 0.0,
) -> list[Message]:
    """At most ``max_messages`` messages from the positions.

    With ``enable.partition.eof`` set on the consumer (``READER_CONFIG``) the read ends as soon
    as every partition reported its end, at most ``timeout_s`` later; when that finds nothing,
    it waits up to ``idle_wait_s`` more for a first new message (a long poll) and returns as
    soon as one arrives. Without EOF reports, the timeout (or a full batch) ends the read.
    """
    if not positions:
        return []
    consumer.assign(positions)
    messages: list[Message] = []
    not_at_end = {(p.topic, p.partition) for p in positions}
    started = time.monotonic()
    deadline = started + timeout_s
    while len(messages) < max_messages:
        now = time.monotonic()
        if not not_at_end and (messages or now >= started + idle_wait_s):
            break
        left = (deadline if not_at_end else started + idle_wait_s) - now
        if left <= 0:
            break
        # poll, not consume: consume(n) waits out its timeout unless n messages arrive
        message = consumer.poll(left)
        if message is None:
            continue
        error = message.error()
        if error is None:
            messages.append(message)
        elif error.code() == KafkaError._PARTITION_EOF:
            not_at_end.discard((message.topic(), message.partition()))
        else:
            raise RuntimeError(f"reading {message.topic()}: {error}")
    return sorted(messages, key=lambda m: (m.topic(), m.partition(), m.offset()))


def read_from_beginning(
    consumer: Consumer, topics: list[str], max_messages: int, timeout_s: float
) -> list[Message]:
    """What is still on ``topics``, from each partition's low watermark (at most
    ``max_messages``); the consumer must report partition ends (``READER_CONFIG``)."""
    starts = []
    for tp in topic_partitions(consumer, topics):
        low, _ = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        starts.append(TopicPartition(tp.topic, tp.partition, low))
    return read_batch(consumer, starts, max_messages, timeout_s)


def fetch_message(
    consumer: Consumer, topic: str, partition: int, offset: int, timeout_s: float = 10.0
) -> Message | None:
    """The message at one offset (for dead-lettering the original after its run failed)."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    for message in consumer.consume(num_messages=1, timeout=timeout_s):
        if message.error() is None and message.offset() == offset:
            return message
    return None

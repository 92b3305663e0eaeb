"""The dead letters on the dead-letter topics, each read once: a scrape reads the letters that
arrived since the last one (at most ``MAX_LETTERS``, so a long topic is caught up over a few
scrapes) and forgets the ones retention deleted, instead of reading every topic from its
beginning again."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.kafka.ingest_reader import read_batch, topic_partitions

MAX_LETTERS = 5000  # letters read per scrape (all topics)
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Letter:
    topic: str
    error_class: str
    source: tuple[str, int, int]  # the ingest message it stands for
    produced_at: float  # epoch seconds


def letter_of(message: Message) -> Letter:
    headers = headers_dict(message.headers())
    source = (
        headers.get("source-topic", ""),
        int(headers.get("source-partition") or -1),
        int(headers.get("source-offset") or -1),
    )
    return Letter(
        message.topic(),
        headers.get("error-class") or "unknown",
        source,
        message.timestamp()[1] / 1000,
    )


class LetterLog:
    """Every letter still on the topics, kept between calls. One caller at a time."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], collections.deque[tuple[int, Letter]]] = {}
        self._next: dict[tuple[str, int], int] = {}

    def refresh(self, consumer: Consumer, topics: list[str]) -> list[Letter]:
        """Reads what is new on ``topics`` and returns every letter held; the consumer must
        report partition ends (``READER_CONFIG``)."""
        positions = []
        listed = {(tp.topic, tp.partition) for tp in topic_partitions(consumer, topics)}
        for gone in set(self._held) - listed:  # topics deleted since
            del self._held[gone]
            self._next.pop(gone, None)
        for key in sorted(listed):
            tp = TopicPartition(*key)
            low, high = consumer.get_watermark_offsets(tp, timeout=READ_TIMEOUT_S)
            held = self._held.setdefault(key, collections.deque())
            start = self._next.get(key, low)
            if start > high:  # the topic was deleted and made again
                held.clear()
                start = low
            while held and held[0][0] < low:  # deleted by retention
                held.popleft()
            start = self._next[key] = max(start, low)
            if start < high:
                positions.append(TopicPartition(*key, start))
        for message in read_batch(consumer, positions, MAX_LETTERS, READ_TIMEOUT_S):
            key = (message.topic(), message.partition())
            self._held[key].append((message.offset(), letter_of(message)))
            self._next[key] = message.offset() + 1
        return [letter for held in self._held.values() for _, letter in held]

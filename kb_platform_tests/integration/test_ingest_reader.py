"""``read_batch`` on the real broker: a full batch at most, a read that ends at the partitions'
end instead of its timeout, and a long poll that returns the message that arrives during it."""

from __future__ import annotations

import threading
import time

from confluent_kafka import TopicPartition

from kb_platform.kafka.ingest_reader import READER_CONFIG, read_batch
from kb_platform.resources.kafka import KafkaResource

LONG_TIMEOUT_S = 20.0  # far longer than any of these reads may take


def test_reads_end_at_the_partition_end_and_long_polls_return_on_arrival(
    text_topic: tuple[KafkaResource, str],
) -> None:
    scoped, topic = text_topic
    producer = scoped.producer()
    for i in range(30):
        producer.produce(topic, value=f"{i}".encode())
    assert producer.flush(30) == 0
    consumer = scoped.consumer(scoped.consumer_group, **READER_CONFIG)
    try:
        batch = read_batch(consumer, [TopicPartition(topic, 0, 0)], 20, LONG_TIMEOUT_S)
        assert [m.offset() for m in batch] == list(range(20))  # bounded, in offset order

        started = time.monotonic()
        rest = read_batch(consumer, [TopicPartition(topic, 0, 20)], 20, LONG_TIMEOUT_S)
        assert [m.offset() for m in rest] == list(range(20, 30))
        assert time.monotonic() - started < LONG_TIMEOUT_S / 2  # ended at EOF, not timeout

        late = threading.Timer(
            1.0, lambda: (producer.produce(topic, value=b"late"), producer.flush(30))
        )
        late.start()
        started = time.monotonic()
        arrived = read_batch(
            consumer,
            [TopicPartition(topic, 0, 30)],
            20,
            LONG_TIMEOUT_S,
            idle_wait_s=LONG_TIMEOUT_S,
        )
        late.join()
        assert [m.value() for m in arrived] == [b"late"]
        assert time.monotonic() - started < LONG_TIMEOUT_S / 2  # returned on arrival

        assert read_batch(consumer, [TopicPartition(topic, 0, 31)], 20, LONG_TIMEOUT_S) == []
    finally:
        consumer.close()

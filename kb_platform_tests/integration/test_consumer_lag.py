"""Consumer lag in seconds on the real broker: the age of the oldest unsettled message, by its
Kafka timestamp, whatever state (unread, in flight) keeps it unsettled."""

from __future__ import annotations

import time

from dagster import DagsterInstance

from kb_platform.kafka import ledger
from kb_platform.kafka.ingest_reader import partition_key
from kb_platform.kafka.lag import lag_seconds, oldest_unsettled
from kb_platform.kafka.ledger import MessageState, source_key
from kb_platform.resources.kafka import KafkaResource


def test_lag_is_the_age_of_the_oldest_unsettled_message(
    text_topic: tuple[KafkaResource, str],
) -> None:
    scoped, topic = text_topic
    now_ms = int(time.time() * 1000)
    producer = scoped.producer()
    producer.produce(topic, value=b"{}", timestamp=now_ms - 30_000)  # produced 30 s ago
    producer.produce(topic, value=b"{}", timestamp=now_ms - 5_000)  # and 5 s ago
    assert producer.flush(30) == 0

    consumer = scoped.consumer(scoped.consumer_group)
    topics = scoped.topics().all_ingest()
    with DagsterInstance.ephemeral() as instance:
        try:
            # Unread counts: the oldest is offset 0, waiting for 30 s.
            waiting = oldest_unsettled(consumer, instance, topics)
            assert waiting is not None and (waiting.topic, waiting.offset) == (topic, 0)
            assert 29 <= waiting.age_s() < 60

            # Offset 0 dead-lettered, offset 1 read but not settled (in flight or lost).
            ledger.record_read_positions(instance, {partition_key(topic, 0): 2})
            ledger.record(instance, [source_key(topic, 0, 0)], MessageState.DEAD_LETTERED)
            waiting = oldest_unsettled(consumer, instance, topics)
            assert waiting is not None and waiting.offset == 1
            assert 4 <= lag_seconds(consumer, instance, topics) < 30

            ledger.record(instance, [source_key(topic, 0, 1)], MessageState.PARKED)
            assert oldest_unsettled(consumer, instance, topics) is None
            assert lag_seconds(consumer, instance, topics) == 0.0
        finally:
            consumer.close()

"""The local broker is a real Kafka: topics, idempotent produce, consumer groups, manual commits."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from kb_platform.resources.kafka import KafkaResource


def _create_topic(kafka: KafkaResource, name: str, partitions: int = 1) -> None:
    admin = kafka.admin()  # must outlive the future, or the request is cancelled
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    futures[name].result(timeout=30)


def _poll(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list:
    messages = []
    for _ in range(int(timeout_s * 10)):
        if len(messages) >= count:
            break
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        messages.append(msg)
    return messages


def test_broker_reports_kraft_metadata(kafka: KafkaResource) -> None:
    metadata = kafka.admin().list_topics(timeout=10)
    assert metadata.brokers, "no broker in cluster metadata"
    assert metadata.controller_id >= 0


def test_produce_consume_with_manual_commit_resumes_after_last_commit(
    kafka: KafkaResource, unique_name: str
) -> None:
    topic = unique_name
    _create_topic(kafka, topic)
    producer = kafka.producer()
    for i in range(10):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0

    group = f"{unique_name}-group"
    first = kafka.consumer(group)
    first.subscribe([topic])
    received = _poll(first, 10)
    assert [m.value() for m in received] == [f"v{i}".encode() for i in range(10)]
    # Commit only over the first four (their work is done); the rest stays unfinished.
    first.commit(offsets=[TopicPartition(topic, 0, received[3].offset() + 1)], asynchronous=False)
    first.close()

    second = kafka.consumer(group)
    second.subscribe([topic])
    resumed = _poll(second, 6)
    second.close()
    assert [m.value() for m in resumed] == [f"v{i}".encode() for i in range(4, 10)]


def test_consumer_lag_is_end_offset_minus_committed(kafka: KafkaResource, unique_name: str) -> None:
    topic = unique_name
    _create_topic(kafka, topic)
    producer = kafka.producer()
    for i in range(5):
        producer.produce(topic, value=str(i).encode())
    producer.flush(30)

    consumer = kafka.consumer(f"{unique_name}-group")
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    assert (committed, high, high - committed) == (2, 5, 3)

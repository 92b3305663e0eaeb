"""``commit_settled_offsets``: the consumer group's committed offsets follow finished work.

Per ingest partition, the committed offset advances over the contiguous run of settled
messages (indexed, dead-lettered or parked) and stops at the first one still in flight, so
consumer lag always counts unfinished work and a restart resumes exactly there.
"""

from confluent_kafka import TopicPartition
from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from kb_platform.kafka import ledger
from kb_platform.kafka.ingest_reader import topic_partitions
from kb_platform.resources.kafka import KafkaResource


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Commits Kafka offsets over finished messages.",
)
def commit_settled_offsets(context: SensorEvaluationContext, kafka: KafkaResource) -> SkipReason:
    consumer = kafka.consumer(kafka.consumer_group)
    moved = []
    try:
        partitions = topic_partitions(consumer, kafka.topics().all_ingest())
        committed = consumer.committed(partitions, timeout=10) if partitions else []
        for tp in committed:
            start = max(tp.offset, 0)
            read_until = ledger.read_position(context.instance, tp.topic, tp.partition)
            scan = range(start, min(read_until, start + ledger.MAX_SCAN))
            states = ledger.classify(context.instance, tp.topic, tp.partition, scan, read_until)
            target = ledger.committable(start, states)
            if target > start:
                consumer.commit(
                    offsets=[TopicPartition(tp.topic, tp.partition, target)], asynchronous=False
                )
                moved.append(f"{tp.topic}:{tp.partition} {start}->{target}")
    finally:
        consumer.close()
    return SkipReason(f"committed {', '.join(moved)}" if moved else "nothing new to commit")

"""What a scrape of the pipeline exporter's Kafka part costs as the ingest topics grow.

    .venv/bin/python benchmarks/exporter_scrape.py [--messages 2000,10000] [--scrapes 5]

For each size: a topic set of its own on the local broker with that many messages on the text
ingest topic, a SQLite Dagster instance in which all but the last 1 % were indexed (one run each,
as the sensor makes them) and 1 % more dead-lettered, and the sensor's read position past them
all. Then it times the full audit (``kb-platform audit``: every retained offset classified) and
the exporter's scrapes (``KafkaMetrics.collect``: the incremental audit, the dead letters, the
lag): the first scrape classifies everything once, the later ones only what may still change.
Needs Kafka.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.contracts import Modality
from kb_platform.defs.ingestion.kafka_sensor import source_tags
from kb_platform.kafka import ledger
from kb_platform.kafka.audit import audit
from kb_platform.kafka.ingest_reader import READER_CONFIG, partition_key
from kb_platform.kafka.ledger import MessageState, source_key
from kb_platform.observability.kafka_metrics import KafkaMetrics
from kb_platform.resources import kafka_names
from kb_platform.resources.kafka import KafkaResource


def filled(instance: DagsterInstance, kafka: KafkaResource, messages: int) -> None:
    topic = kafka.topics().ingest(Modality.TEXT)
    producer = kafka.producer()
    for _ in range(messages):
        producer.produce(topic, value=b"{}")
        producer.poll(0)
    assert producer.flush(60) == 0
    settled = messages - messages // 100
    dead = set(range(0, settled, 100))
    for offset in range(settled):
        if offset not in dead:
            create_run_for_test(
                instance,
                job_name="process_documents",
                status=DagsterRunStatus.SUCCESS,
                tags=source_tags(topic, 0, offset, f"doc-{offset}"),
            )
    ledger.record(instance, [source_key(topic, 0, o) for o in dead], MessageState.DEAD_LETTERED)
    ledger.record_read_positions(instance, {partition_key(topic, 0): messages})


def measure(messages: int, scrapes: int) -> None:
    base = KafkaResource(**kafka_names(get_settings()))
    kafka = base.namespaced(f"bench-{uuid.uuid4().hex[:8]}")
    kafka.create_topics(partitions=1)
    with tempfile.TemporaryDirectory() as home, DagsterInstance.local_temp(home) as instance:
        started = time.perf_counter()
        filled(instance, kafka, messages)
        print(f"{messages} messages: instance filled in {time.perf_counter() - started:.0f} s")
        consumer = kafka.consumer(kafka.consumer_group)
        started = time.perf_counter()
        audit(consumer, instance, kafka.topics().all_ingest())
        full = time.perf_counter() - started
        consumer.close()
        metrics = KafkaMetrics(
            instance,
            kafka.topics(),
            group_consumer=lambda: kafka.consumer(kafka.consumer_group),
            reader=lambda: kafka.consumer(f"{kafka.consumer_group}-m", **READER_CONFIG),
        )
        times = []
        for _ in range(scrapes):
            started = time.perf_counter()
            names = {m.name for m in metrics.collect()}
            times.append(time.perf_counter() - started)
            assert "kb_kafka_consumer_lag_seconds" in names, "the scrape could not read Kafka"
        later = statistics.median(times[1:]) if len(times) > 1 else float("nan")
        print(
            f"  full audit {full * 1000:.0f} ms | first scrape {times[0] * 1000:.0f} ms | "
            f"later scrapes p50 {later * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", default="2000,10000")
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    with printed_machine_load():
        for messages in (int(n) for n in args.messages.split(",")):
            measure(messages, args.scrapes)


if __name__ == "__main__":
    main()

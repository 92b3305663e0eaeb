"""End-to-end ingestion through Kafka: produce -> sensor -> runs -> indexed chunks.

    .venv/bin/python benchmarks/ingest.py [--limit 60] [--corpus ../shared/corpus]

Produces the shared corpus documents (file:// messages) to topics of its own, then alternates
sensor ticks, the requested runs (executed one after another in this process, as one run
worker with models loaded once) and offset commits, until every message is settled. Prints
documents per second, message-to-indexed latency p50/p95, processing time per asset, and the
consumer lag seen after each tick. Needs Kafka and Elasticsearch (`kb-platform services up`).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import TopicPartition
from dagster import (
    DagsterEventType,
    DagsterInstance,
    FilesystemIOManager,
    build_run_status_sensor_context,
    build_sensor_context,
)

from kb_platform.cli import _declared_modality, _files
from kb_platform.config import get_settings
from kb_platform.contracts import IngestMessage
from kb_platform.definitions import build_definitions
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.reliability.dead_letter_sensor import dead_letter_on_failure
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.kafka.topics import ensure_topics
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource


def lag(kafka: KafkaResource) -> int:
    consumer = kafka.consumer(kafka.consumer_group)
    total = 0
    for topic in kafka.topics().all_ingest():
        tp = TopicPartition(topic, 0)
        (committed,) = consumer.committed([tp], timeout=10)
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        total += high - max(committed.offset, 0)
    consumer.close()
    return total


def dead_letter(instance: DagsterInstance, result, kafka: KafkaResource) -> None:
    """What the daemon's run-failure sensor does for a failed run."""
    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.RUN_FAILURE)
    with build_run_status_sensor_context(
        sensor_name="dead_letter_on_failure",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        dagster_event=failure,
        resources={"kafka": kafka},
    ) as context:
        dead_letter_on_failure(context.for_run_failure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    parser.add_argument("--limit", type=int, default=60, help="documents to produce")
    args = parser.parse_args()
    settings = get_settings()
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="kb-ingest-bench-"))
    kafka = KafkaResource(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        ingest_topic_prefix=f"bench-{run_id}.ingest.",
        dlq_topic_prefix=f"bench-{run_id}.dlq.",
        consumer_group=f"bench-{run_id}",
        max_batch=20,
    )
    topics = kafka.topics()
    ensure_topics(kafka.admin(), [*topics.all_ingest(), *topics.all_dlq()], partitions=1)
    index_base = f"bench-{run_id}"
    es_resource = ElasticsearchResource(url=settings.elasticsearch_url, index_base=index_base)
    resources = {
        "kafka": kafka,
        "blob_store": LocalBlobStore(base_dir=str(work / "blobs")),
        "processing": ProcessingResource.from_settings(settings),
        "elasticsearch": es_resource,
        "parquet_io_manager": ParquetIOManager(base_uri=str(work / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(work / "assets")),
    }
    defs = build_definitions(resources)
    job = defs.resolve_job_def("process_documents")

    files = _files((args.corpus / "documents",))[: args.limit]
    producer = kafka.producer()
    for path in files:
        modality = _declared_modality(path)
        message = IngestMessage(source_id=str(path), uri=path.resolve().as_uri(), modality=modality)
        producer.produce(topics.ingest(modality), value=message.model_dump_json().encode())
    producer.flush(60)
    produced_at = time.time()

    latencies: list[float] = []
    lags: list[int] = []
    step_seconds: dict[str, list[float]] = collections.defaultdict(list)
    outcomes: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        cursor = None
        while True:
            with build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
                tick = kafka_ingest_sensor(ctx)
            cursor = tick.cursor
            for request in tick.dynamic_partitions_requests:
                instance.add_dynamic_partitions("documents", list(request.partition_keys))
            for request in tick.run_requests:
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=request.partition_key,
                    tags=request.tags,
                    raise_on_error=False,
                    run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                )
                outcomes["indexed" if result.success else "failed"] += 1
                if result.success:
                    latencies.append(time.time() - produced_at)
                else:
                    dead_letter(instance, result, kafka)
                for stats in instance.get_run_step_stats(result.run_id):
                    if stats.end_time and stats.start_time:
                        step_seconds[stats.step_key].append(stats.end_time - stats.start_time)
            with build_sensor_context(instance=instance, resources={"kafka": kafka}) as ctx:
                commit_settled_offsets(ctx)
            lags.append(lag(kafka))
            if not tick.run_requests and lags[-1] == 0:
                break
    elapsed = time.perf_counter() - started
    documents = sum(outcomes.values())
    print(f"{len(files)} files produced; {dict(outcomes)} runs; {elapsed:.1f}s")
    print(f"end-to-end: {documents / elapsed:.2f} documents/s (one run worker, models loaded once)")
    print(
        f"message-to-indexed latency: p50 {np.percentile(latencies, 50):.1f}s, "
        f"p95 {np.percentile(latencies, 95):.1f}s (all messages produced at t=0)"
    )
    print(f"consumer lag after each tick: {lags}")
    print("| step | runs | mean s | total s |")
    print("|---|---|---|---|")
    for step, values in sorted(step_seconds.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {step} | {len(values)} | {statistics.mean(values):.2f} | {sum(values):.1f} |")
    es = es_resource.make_client()
    delete_family(es, IndexNames(index_base))
    es.close()


if __name__ == "__main__":
    main()

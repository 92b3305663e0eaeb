"""End-to-end ingestion through Kafka: produce -> sensor -> runs -> indexed chunks.

    .venv/bin/python benchmarks/ingest.py [--limit 60] [--corpus ../shared/corpus]
        [--daemon | --compare] [--encoder-service]

Produces the shared corpus documents (file:// messages) to topics of its own, then either
- (default) alternates sensor ticks, the requested runs (executed one after another in this
  process, as one run worker with models loaded once) and offset commits, or
- (--daemon) starts a `dagster dev` of its own (webserver + daemon + warm run workers, instance
  in a temporary DAGSTER_HOME) whose sensors and run launcher do everything, one run per
  document, or
- (--compare) both on the same documents, one after the other, and their ratio,
until every message is settled. With --encoder-service, text embeddings come from the warm
encoder service (bentos/encoder, started for the run) instead of a model in the run worker.
Prints documents per second, message-to-indexed latency p50/p95, the consumer lag in seconds
while it runs, and where the runs' time went. Needs Kafka and Elasticsearch
(`kb-platform services up`).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from confluent_kafka import TopicPartition
from daemon_stack import (  # benchmarks/, next to this script
    LagSampler,
    daemon_stack,
    encoder_service_env,
    print_phases,
    run_phases,
    stop_encoder_service,
    worker_memory,
)
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    FilesystemIOManager,
    PipesSubprocessClient,
    RunsFilter,
    build_run_status_sensor_context,
    build_sensor_context,
)
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.cli import _declared_modality, _files
from kb_platform.config import REPO_ROOT, get_settings
from kb_platform.contracts import IngestMessage
from kb_platform.definitions import build_definitions
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.reliability.dead_letter_sensor import dead_letter_on_failure
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.clip_encoder import ClipEncoderResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform.resources.text_encoder import TextEncoderResource


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


@dataclass
class Measured:
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)  # message produced -> indexed, seconds
    lags: list[int] = field(default_factory=list)
    lag_seconds: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    finished_at: float = 0.0  # when the last run ended (epoch seconds)
    produced: int = 0
    produced_at: float = 0.0  # when the last message was confirmed (epoch seconds)


def produce_corpus(kafka: KafkaResource, corpus: Path, limit: int) -> tuple[int, float]:
    topics = kafka.topics()
    files = _files((corpus / "documents",))[:limit]
    producer = kafka.producer()
    for path in files:
        modality = _declared_modality(path)
        message = IngestMessage(source_id=str(path), uri=path.resolve().as_uri(), modality=modality)
        producer.produce(topics.ingest(modality), value=message.model_dump_json().encode())
    producer.flush(60)
    return len(files), time.time()


def in_process(kafka: KafkaResource, resources: dict, produced_at: float, home: Path) -> Measured:
    """The sensor's runs one after another in this process, on an instance stored like the
    daemon's and `kb-platform ingest --in-process`'s (dagster.yaml's SQLite storage under a
    DAGSTER_HOME): an in-memory instance would leave out the event-log writes every real run
    pays for."""
    job = build_definitions(resources).resolve_job_def("process_documents")
    m = Measured()
    home.mkdir(parents=True, exist_ok=True)
    storage = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["storage"]
    storage["custom"]["config"]["base_dir"] = str(home)
    with DagsterInstance.local_temp(tempdir=str(home), overrides={"storage": storage}) as instance:
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
                m.outcomes["indexed" if result.success else "failed"] += 1
                m.finished_at = time.time()
                if result.success:
                    m.latencies.append(m.finished_at - produced_at)
                else:
                    dead_letter(instance, result, kafka)
            with build_sensor_context(instance=instance, resources={"kafka": kafka}) as ctx:
                commit_settled_offsets(ctx)
            m.lags.append(lag(kafka))
            if not tick.run_requests and m.lags[-1] == 0:
                break
        m.phases = run_phases(instance, {})
    return m


def through_daemon(
    kafka: KafkaResource,
    work: Path,
    index_base: str,
    args: argparse.Namespace,
    extra_env: dict[str, str],
) -> Measured:
    m = Measured()
    with daemon_stack(kafka, work, index_base, extra_env) as instance:
        m.produced, m.produced_at = produce_corpus(kafka, args.corpus, args.limit)
        produced_at = m.produced_at
        with LagSampler(kafka, instance, interval_s=5.0) as sampler:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                time.sleep(5)
                if lag(kafka) == 0:
                    break
        m.lag_seconds = sampler.samples
        for record in instance.get_run_records(RunsFilter(job_name="process_documents")):
            run = record.dagster_run
            m.outcomes[run.status.value] += 1
            m.finished_at = max(m.finished_at, record.end_time or 0.0)
            if run.status is DagsterRunStatus.SUCCESS and record.end_time:
                m.latencies.append(record.end_time - produced_at)
        m.phases = run_phases(instance, {})
        print(f"run workers' resident memory after {len(m.latencies)} runs: {worker_memory()}")
    return m


def report(m: Measured, how: str) -> float:
    produced = m.produced
    elapsed = m.finished_at - m.produced_at
    rate = sum(m.outcomes.values()) / elapsed
    print(f"\n## {how}")
    print(f"{produced} files produced; runs {dict(m.outcomes)}; last run ended at {elapsed:.1f}s")
    print(f"end-to-end: {rate:.3f} documents/s")
    print(
        f"message-to-indexed latency: p50 {np.percentile(m.latencies, 50):.1f}s, "
        f"p95 {np.percentile(m.latencies, 95):.1f}s (all messages produced at t=0)"
    )
    print(f"consumer lag (offsets behind the committed offset) while running: {m.lags}")
    if m.lag_seconds:
        print(
            f"consumer lag in seconds (oldest unsettled message), p50 "
            f"{np.percentile(m.lag_seconds, 50):.0f}s, p95 {np.percentile(m.lag_seconds, 95):.0f}s"
        )
    print_phases(m.phases)
    return rate


def bench(daemon: bool, args: argparse.Namespace) -> float:
    """One measured ingest of the documents, on topics and an index of its own; documents/s."""
    settings = get_settings()
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="kb-ingest-bench-"))
    kafka = KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers).namespaced(
        f"bench-{run_id}", max_batch=20
    )
    kafka.create_topics(partitions=1)
    index_base = f"bench-{run_id}"
    es_resource = ElasticsearchResource(url=settings.elasticsearch_url, index_base=index_base)
    resources = {
        "kafka": kafka,
        "blob_store": LocalBlobStore(base_dir=str(work / "blobs")),
        "processing": ProcessingResource.from_settings(settings),
        "clip": ClipResource(root_dir=str(work / "clip")),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "elasticsearch": es_resource,
        "parquet_io_manager": ParquetIOManager(base_uri=str(work / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(work / "assets")),
    }
    encoder_env = encoder_service_env(work) if args.encoder_service else {}
    if encoder_env:
        service = {
            "service_url": encoder_env["KB_ENCODER_URL"],
            "service_token": encoder_env["KB_ENCODER_TOKEN"],
        }
        resources["text_encoder"] = TextEncoderResource(**service)
        resources["clip_encoder"] = ClipEncoderResource(**service)
    try:
        if daemon:
            # The stack is up and its workers warm before the documents arrive (an idle stack).
            m = through_daemon(kafka, work, index_base, args, encoder_env)
            how = "dagster dev: sensor -> queue -> warm run workers, one run per document"
        else:
            produced, produced_at = produce_corpus(kafka, args.corpus, args.limit)
            m = in_process(kafka, resources, produced_at, work / "in_process_home")
            m.produced, m.produced_at = produced, produced_at
            how = "one warm run worker in this process, runs one after another"
    finally:
        if encoder_env:
            stop_encoder_service(work)
        es = es_resource.make_client()
        delete_family(es, IndexNames(index_base))
        es.close()
    how += "; text embeddings from the encoder service" if encoder_env else ""
    return report(m, how)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    parser.add_argument("--limit", type=int, default=60, help="documents to produce")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", help="through a real dagster dev")
    mode.add_argument("--compare", action="store_true", help="in process, then the daemon")
    parser.add_argument("--timeout", type=float, default=3600, help="daemon: give up after")
    parser.add_argument(
        "--encoder-service", action="store_true", help="text embeddings from the encoder service"
    )
    args = parser.parse_args()
    if not args.compare:
        bench(args.daemon, args)
        return
    in_process_rate = bench(False, args)
    daemon_rate = bench(True, args)
    print(
        f"\ndaemon {daemon_rate:.3f} docs/s vs in process {in_process_rate:.3f} docs/s: "
        f"ratio {daemon_rate / in_process_rate:.2f} (target >= 0.8)"
    )


if __name__ == "__main__":
    with printed_machine_load():
        main()

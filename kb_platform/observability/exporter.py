"""The pipeline exporter: one HTTP ``/metrics`` for Prometheus with the metrics of every run
(``pipeline_metrics``), the Kafka/ledger metrics (``kafka_metrics``) and the latest training
run's (``training_metrics``), computed when Prometheus scrapes. It runs beside the Dagster
daemon (``kb-platform exporter``), reading the same instance, so nothing has to be pushed from
run processes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from dagster import DagsterInstance
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from kb_platform.contracts import Modality
from kb_platform.kafka.ingest_reader import READER_CONFIG
from kb_platform.observability.kafka_metrics import KafkaMetrics
from kb_platform.observability.pipeline_metrics import PipelineMetrics
from kb_platform.observability.training_metrics import TrainingMetrics
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.processing import ProcessingResource

log = logging.getLogger(__name__)


@dataclass
class Exporter:
    registry: CollectorRegistry
    pipeline: PipelineMetrics
    kafka: KafkaMetrics


def build_exporter(
    instance: DagsterInstance, kafka: KafkaResource, processing: ProcessingResource
) -> Exporter:
    """The registry Prometheus scrapes, over ``instance`` and ``kafka``'s topics and group;
    ``processing`` gives the modalities' time limits (for the processing-time alert)."""
    topics = kafka.topics()
    registry = CollectorRegistry()
    pipeline = PipelineMetrics(instance, topics)
    kafka_metrics = KafkaMetrics(
        instance,
        topics,
        group_consumer=lambda: kafka.consumer(kafka.consumer_group),
        reader=lambda: kafka.consumer(f"{kafka.consumer_group}-metrics", **READER_CONFIG),
    )
    registry.register(pipeline)
    registry.register(kafka_metrics)
    registry.register(TrainingMetrics(instance))
    info = Gauge(
        "kb_exporter_info",
        "The pipeline exporter and the consumer group it reports on",
        ["consumer_group"],
        registry=registry,
    )
    info.labels(kafka.consumer_group).set(1)
    limits = Gauge(
        "kb_processing_limit_seconds",
        "The time limit of a document's work, per modality",
        ["modality"],
        registry=registry,
    )
    for modality in Modality:
        limits.labels(modality.value).set(processing.timeout_s(modality))
    return Exporter(registry, pipeline, kafka_metrics)


def serve(exporter: Exporter, host: str, port: int, stop: threading.Event) -> None:
    """Serves ``/metrics`` on ``host:port`` until ``stop`` is set."""
    server, thread = start_http_server(port, addr=host, registry=exporter.registry)
    log.info("pipeline exporter on http://%s:%d/metrics", host, port)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

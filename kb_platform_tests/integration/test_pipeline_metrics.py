"""The pipeline exporter under a real Prometheus: a good, a corrupt and a timed-out document go
from Kafka through the sensor, the runs, the dead-letter sensor and the offset commit, and
Prometheus' query API shows the series with the values that happened."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster import build_sensor_context

from kb_platform.contracts import Modality
from kb_platform.definitions import build_definitions
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.observability.exporter import build_exporter
from kb_platform.observability.training_metrics import TrainingMetrics
from kb_platform.resources.processing import ProcessingResource
from kb_platform_tests.dashboard_checks import BENTOML, DCGM, check_dashboards, service_names
from kb_platform_tests.integration.kafka_helpers import (
    assert_all_accounted,
    failure_sensor_on,
    message,
    produce,
)
from kb_platform_tests.prometheus_server import running_prometheus


def test_prometheus_sees_runs_failures_dead_letters_and_lag(
    stack, served_exporter, corpus_dir: Path, settings, tmp_path: Path
) -> None:
    instance, defs, kafka = stack
    exporter_, address = served_exporter.exporter, served_exporter.address
    topics = kafka.topics()
    docs = corpus_dir / "documents"
    good = docs / "unstructured/example-docs/fake-text.txt"
    corrupt = next(docs.rglob("unreadablemetadata.pdf"))
    slow = docs / "py-pdf-sample-files/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"
    produce(kafka, topics.ingest(Modality.TEXT), [message(good, "text")])
    produce(kafka, topics.ingest(Modality.DOCUMENT), [message(corrupt), message(slow)])

    # The messages wait: the lag in seconds is their age. (A new consumer group's coordinator
    # may not answer the first scrape: kb_kafka_up 0 and no lag series, then it does.)
    produced, lag = time.monotonic(), None
    while (lag is None or lag < 1.0) and time.monotonic() - produced < 30:
        time.sleep(0.5)
        lag = exporter_.registry.get_sample_value(
            "kb_kafka_consumer_lag_seconds", {"topic": topics.ingest(Modality.DOCUMENT)}
        )
    assert lag is not None and lag >= 1.0

    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        tick = kafka_ingest_sensor(context)
    (new_partitions,) = tick.dynamic_partitions_requests
    instance.add_dynamic_partitions("documents", list(new_partitions.partition_keys))
    strict = ProcessingResource(
        **{**ProcessingResource.from_settings(settings).model_dump(), "timeout_document_s": 0.5}
    )
    strict_job = build_definitions({**defs.resources, "processing": strict}).resolve_job_def(
        "process_documents"
    )
    job = defs.resolve_job_def("process_documents")
    by_offset = {
        (r.tags["kb/source-topic"], r.tags["kb/source-offset"]): r for r in tick.run_requests
    }
    assert len(by_offset) == 3
    for (topic, offset), request in sorted(by_offset.items()):
        timed = topic == topics.ingest(Modality.DOCUMENT) and offset == "1"
        result = (strict_job if timed else job).execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )
        if not result.success:
            failure_sensor_on(instance, result, kafka)
    with build_sensor_context(instance=instance, resources={"kafka": kafka}) as context:
        commit_settled_offsets(context)
    assert_all_accounted(instance, kafka)

    dlq = topics.dlq(Modality.DOCUMENT)
    with running_prometheus(tmp_path / "prometheus", {"kb-exporter": address}) as prometheus:
        prometheus.wait_for('up{job="kb-exporter"}', 1.0)
        prometheus.wait_for("kb_kafka_up", 1.0)
        expected = {
            'sum(kb_documents_processed_total{outcome="succeeded"})': 1.0,
            'sum(kb_documents_processed_total{modality="document",outcome="failed"})': 2.0,
            'sum(kb_step_failures_total{error_class="Corrupt",modality="document"})': 1.0,
            'sum(kb_step_timeouts_total{modality="document"})': 1.0,
            f'kb_dlq_letters{{topic="{dlq}",error_class="Corrupt"}}': 1.0,
            f'kb_dlq_letters{{topic="{dlq}",error_class="Timeout"}}': 1.0,
            f'kb_dlq_depth{{topic="{dlq}"}}': 2.0,
            f'kb_ingest_messages{{topic="{topics.ingest(Modality.TEXT)}",state="indexed"}}': 1.0,
            f'kb_ingest_messages{{topic="{topics.ingest(Modality.DOCUMENT)}",'
            'state="dead_lettered"}': 2.0,
            'sum(kb_ingest_messages{state="unaccounted"})': 0.0,
            f'kb_kafka_committed_offset{{topic="{topics.ingest(Modality.DOCUMENT)}"}}': 2.0,
            "max(kb_kafka_consumer_lag_messages)": 0.0,
            "max(kb_kafka_consumer_lag_seconds)": 0.0,
            'kb_processing_limit_seconds{modality="document"}': 180.0,
        }
        for expr, value in expected.items():
            prometheus.wait_for(expr, value, timeout_s=20)
        # every successful step of the good document is in the per-asset histogram
        indexed = prometheus.value(
            'sum(kb_asset_processing_seconds_count{asset="search_index",modality="text"})'
        )
        assert indexed == 1.0
        oldest = prometheus.value(f'kb_dlq_oldest_letter_age_seconds{{topic="{dlq}"}}')
        assert oldest is not None and oldest > 0
        # the p95 a document took, as the processing-time alert computes it, is a real number
        p95 = prometheus.value(
            "histogram_quantile(0.95, sum by (le) (kb_document_processing_seconds_bucket))"
        )
        assert p95 is not None and p95 > 0

        # Every dashboard's expressions parse, name only metrics something exports, and the
        # pipeline's own return data here.
        exported = prometheus.names()
        training = {family.name for family in TrainingMetrics(instance).collect()}
        recorded = {"kb:documents_failed:ratio_rate5m"}
        known = exported | training | recorded | service_names() | BENTOML | DCGM
        pipeline = {n for n in exported if n.startswith("kb_")} | recorded
        assert check_dashboards(prometheus, known, with_data=pipeline) >= 30
        with pytest.raises(AssertionError, match="kb_dlq_depth"):  # a name nothing exports
            check_dashboards(prometheus, known - {"kb_dlq_depth"}, with_data=pipeline)
        with pytest.raises(AssertionError, match="bad_data"):  # an expression that cannot parse
            prometheus.query("sum(rate(kb_dlq_depth[5m])")

    # A restarted exporter resumes where the last one stopped (kept in the instance): its
    # counters start at 0 and the runs counted before are not counted again.
    restarted = build_exporter(instance, kafka, ProcessingResource.from_settings(settings))
    assert restarted.pipeline.update() == 0
    assert restarted.registry.get_sample_value(
        "kb_documents_processed_total", {"modality": "text", "outcome": "succeeded"}
    ) in (None, 0.0)

"""Training metrics from the latest ``clip_checkpoint`` materialization: the FSDP run's mean
loss and throughput (samples/s over all ranks, as the trainer reports them through Dagster
Pipes), the candidate's held-out recall, and when it was trained."""

from __future__ import annotations

from collections.abc import Iterator

from dagster import AssetKey, DagsterInstance
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CHECKPOINTS = {"clip": AssetKey("clip_checkpoint")}


class TrainingMetrics(Collector):
    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance

    def collect(self) -> Iterator[Metric]:
        loss = GaugeMetricFamily(
            "kb_training_loss", "Mean training loss of the latest run", labels=["model"]
        )
        rate = GaugeMetricFamily(
            "kb_training_samples_per_second",
            "Training throughput of the latest run, all ranks together",
            labels=["model"],
        )
        recall = GaugeMetricFamily(
            "kb_training_held_out_recall",
            "Held-out recall of the latest candidate",
            labels=["model", "metric"],
        )
        trained = GaugeMetricFamily(
            "kb_training_last_run_timestamp_seconds",
            "When the latest candidate was materialized",
            labels=["model"],
        )
        for model, key in CHECKPOINTS.items():
            event = self._instance.get_latest_materialization_event(key)
            if event is None or event.asset_materialization is None:
                continue
            metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
            if isinstance(metadata.get("loss"), int | float):
                loss.add_metric([model], float(metadata["loss"]))
            if isinstance(metadata.get("samples_per_s"), int | float):
                rate.add_metric([model], float(metadata["samples_per_s"]))
            for name, value in dict(metadata.get("held_out_recall") or {}).items():
                if isinstance(value, int | float):
                    recall.add_metric([model, name], float(value))
            trained.add_metric([model], event.timestamp)
        yield from (loss, rate, recall, trained)

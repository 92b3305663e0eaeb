"""The Grafana dashboards as code (grafanalib): ingestion, serving, models and GPUs, training.

    python -m kb_platform.observability.dashboards   # writes deploy/grafana/dashboards/*.json

The JSON is committed, and a test checks that it is what this module generates, that every
expression parses, and that the pipeline's expressions return data from a real Prometheus.
Grafana loads the files through deploy/grafana/provisioning (no clicks).
"""

from __future__ import annotations

import json
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, Target, TimeSeries

from kb_platform.config import REPO_ROOT

OUT = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = "Prometheus"  # the provisioned datasource's name
WIDTH, HEIGHT = 12, 8  # two panels a row


def panel(title: str, unit: str, *queries: tuple[str, str], description: str = "") -> TimeSeries:
    """A time series of ``queries`` ((PromQL, legend) pairs) in ``unit``; placed by ``board``."""
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        unit=unit,
        targets=[
            Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i))
            for i, (expr, legend) in enumerate(queries)
        ],
    )


def board(uid: str, title: str, description: str, panels: list[TimeSeries]) -> Dashboard:
    for i, p in enumerate(panels):
        p.gridPos = GridPos(h=HEIGHT, w=WIDTH, x=(i % 2) * WIDTH, y=(i // 2) * HEIGHT)
    return Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=["kb-platform"],
        timezone="utc",
        refresh="30s",
        panels=panels,
    ).auto_panel_ids()


def quantiles(metric: str, by: str, selector: str = "", window: str = "5m") -> list:
    return [
        (
            f"histogram_quantile({q}, sum by (le{by}) (rate({metric}_bucket{selector}[{window}])))",
            f"p{int(q * 100)}" + (" {{" + by.strip(", ") + "}}" if by else ""),
        )
        for q in (0.5, 0.95, 0.99)
    ]


def ingestion() -> Dashboard:
    return board(
        "kb-ingestion",
        "kb-platform: ingestion",
        "Kafka to index: throughput, lag, dead letters, failures, time per asset",
        [
            panel(
                "Documents per second",
                "ops",
                ("sum by (outcome) (rate(kb_documents_processed_total[5m]))", "{{outcome}}"),
            ),
            panel(
                "Failed share of documents (alert above 1 %)",
                "percentunit",
                ("kb:documents_failed:ratio_rate5m", "failed"),
            ),
            panel(
                "Consumer lag, seconds (oldest unsettled message; alert above 10 s)",
                "s",
                ("max by (topic) (kb_kafka_consumer_lag_seconds)", "{{topic}}"),
            ),
            panel(
                "Consumer lag, messages past the committed offset",
                "short",
                ("sum by (topic) (kb_kafka_consumer_lag_messages)", "{{topic}}"),
            ),
            panel(
                "Dead-letter depth (documents still dead-lettered)",
                "short",
                ("kb_dlq_depth", "{{topic}}"),
                ('sum by (topic) (kb_ingest_messages{state="parked"})', "parked {{topic}}"),
            ),
            panel(
                "Oldest dead letter",
                "s",
                ("kb_dlq_oldest_letter_age_seconds", "{{topic}}"),
            ),
            panel(
                "Step failures by error class, last 15 min",
                "short",
                (
                    "sum by (error_class) (increase(kb_step_failures_total[15m]))",
                    "{{error_class}}",
                ),
                ("sum by (modality) (increase(kb_step_timeouts_total[15m]))", "timeouts"),
            ),
            panel(
                "Messages by state",
                "short",
                ("sum by (state) (kb_ingest_messages)", "{{state}}"),
            ),
            panel(
                "p95 seconds per asset",
                "s",
                (
                    "histogram_quantile(0.95, sum by (le, asset) "
                    "(rate(kb_asset_processing_seconds_bucket[5m])))",
                    "{{asset}}",
                ),
            ),
            panel(
                "p95 seconds per document against its modality's limit",
                "s",
                (
                    "histogram_quantile(0.95, sum by (le, modality) "
                    "(rate(kb_document_processing_seconds_bucket[15m])))",
                    "p95 {{modality}}",
                ),
                ("kb_processing_limit_seconds", "limit {{modality}}"),
            ),
            panel(
                "Retries and dead-letter replays, last hour",
                "short",
                ("sum by (asset) (increase(kb_step_retries_total[1h]))", "retries {{asset}}"),
                ("sum by (modality) (increase(kb_dlq_replays_total[1h]))", "replays {{modality}}"),
            ),
        ],
    )


def serving() -> Dashboard:
    return board(
        "kb-serving",
        "kb-platform: serving",
        "The RAG and encoder services: requests, latency, errors, readiness, batching",
        [
            panel(
                "RAG requests per second",
                "reqps",
                (
                    "sum by (endpoint) (rate(kb_serving_request_seconds_count[1m]))",
                    "{{endpoint}}",
                ),
            ),
            panel(
                "RAG latency, /search, /ask and /ask/stream",
                "s",
                *quantiles(
                    "kb_serving_request_seconds",
                    ", endpoint",
                    '{endpoint=~"/search|/ask|/ask/stream"}',
                ),
            ),
            panel(
                "RAG errors (5xx share) and refused requests",
                "percentunit",
                (
                    'sum(rate(kb_serving_request_seconds_count{status=~"5.."}[5m])) '
                    "/ sum(rate(kb_serving_request_seconds_count[5m]))",
                    "5xx share",
                ),
                (
                    "sum by (reason) (rate(kb_serving_rejected_requests_total[5m]))",
                    "refused {{reason}} /s",
                ),
            ),
            panel(
                "Readiness",
                "short",
                ("kb_serving_ready", "rag {{instance}}"),
                ("kb_encoder_ready", "encoder {{instance}}"),
                ('up{job=~"kb-encoder|kb-rag"}', "scraped {{job}}"),
            ),
            panel(
                "Encoder requests per second and their latency",
                "short",
                (
                    'sum by (endpoint) (rate(bentoml_service_request_total{job="kb-encoder"}[1m]))',
                    "{{endpoint}} /s",
                ),
                *quantiles("bentoml_service_request_duration_seconds", "", '{job="kb-encoder"}'),
            ),
            panel(
                "Encoder batch sizes (adaptive batching)",
                "short",
                *quantiles("kb_encoder_batch_texts", ", model"),
                *quantiles("kb_encoder_clip_batch_items", "")[:1],
            ),
            panel(
                "Answer generation seconds and answers by kind (generated, refused, extractive)",
                "s",
                *quantiles("kb_serving_generation_seconds", ", generator"),
                ("sum by (kind) (rate(kb_serving_answers_total[5m]))", "{{kind}} /s"),
            ),
            panel(
                "Time to an answer's first streamed piece",
                "s",
                *quantiles("kb_serving_first_token_seconds", ", generator"),
            ),
            panel(
                "Encoder refused requests",
                "reqps",
                ("sum by (reason) (rate(kb_encoder_refused_requests_total[5m]))", "{{reason}}"),
            ),
            panel(
                "Circuit breakers (0 closed, 1 half-open, 2 open) and calls they refused",
                "short",
                (
                    "max by (job, dependency, target) (kb_circuit_breaker_state)",
                    "{{job}} → {{dependency}} {{target}}",
                ),
                (
                    "sum by (job, dependency) "
                    "(rate(kb_circuit_breaker_short_circuited_calls_total[5m]))",
                    "refused {{job}} → {{dependency}} /s",
                ),
            ),
        ],
    )


def models() -> Dashboard:
    return board(
        "kb-models",
        "kb-platform: models and GPUs",
        "Model loading and warm-up, model time per batch, GPU utilisation and memory (DCGM)",
        [
            panel(
                "Model load seconds (alert above 30 s)",
                "s",
                ("max by (job, model) (kb_encoder_model_load_seconds)", "{{job}} {{model}}"),
                ("max by (job, model) (kb_serving_model_load_seconds)", "{{job}} {{model}}"),
            ),
            panel(
                "Warm-up seconds by component",
                "s",
                ("max by (component) (kb_encoder_warmup_seconds)", "encoder {{component}}"),
                ("max by (component) (kb_serving_warmup_seconds)", "rag {{component}}"),
            ),
            panel(
                "Model seconds per batch",
                "s",
                *quantiles("kb_encoder_inference_seconds", ", model"),
            ),
            panel(
                "Texts and CLIP items encoded per second",
                "ops",
                ("sum by (model) (rate(kb_encoder_texts_total[1m]))", "{{model}}"),
                ("sum by (kind) (rate(kb_encoder_clip_items_total[1m]))", "clip {{kind}}"),
            ),
            panel(
                "GPU utilisation",
                "percent",
                ("avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL)", "{{Hostname}} gpu {{gpu}}"),
            ),
            panel(
                "GPU memory used (alert above 90 %)",
                "percentunit",
                (
                    "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)",
                    "{{Hostname}} gpu {{gpu}}",
                ),
            ),
        ],
    )


def training() -> Dashboard:
    return board(
        "kb-training",
        "kb-platform: training",
        "The latest FSDP training run of each model: loss, throughput, held-out recall",
        [
            panel("Mean training loss", "short", ("kb_training_loss", "{{model}}")),
            panel(
                "Training samples per second (all ranks)",
                "short",
                ("kb_training_samples_per_second", "{{model}}"),
            ),
            panel(
                "Held-out recall of the latest candidate",
                "percentunit",
                ("kb_training_held_out_recall", "{{model}} {{metric}}"),
            ),
            panel(
                "Since the latest training run",
                "s",
                ("time() - kb_training_last_run_timestamp_seconds", "{{model}}"),
            ),
        ],
    )


def dashboards() -> dict[str, Dashboard]:
    return {d.uid: d for d in (ingestion(), serving(), models(), training())}


def as_json(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True)


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, dashboard in dashboards().items():
        path = out / f"{uid}.json"
        path.write_text(as_json(dashboard) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path.relative_to(REPO_ROOT))

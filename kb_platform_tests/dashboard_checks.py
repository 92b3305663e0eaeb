"""What every dashboard expression must satisfy: it parses under the real Prometheus, names only
metrics that something exports, and (for the pipeline's own metrics) returns data."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from kb_platform.config import REPO_ROOT
from kb_platform_tests.prometheus_server import Prometheus

DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
# BentoML's own request metrics (seen on the encoder's /metrics) and NVIDIA DCGM exporter's
# default counters: names this project does not define but its dashboards use.
BENTOML = {
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds_bucket",
    "bentoml_service_request_in_progress",
}
DCGM = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "on", "or", "and", "unless", "offset", "bool", "without", "ignoring"}


def expressions() -> Iterator[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL) of every target of every committed dashboard."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board: dict[str, Any] = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield board["uid"], panel["title"], target["expr"]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not its functions, labels or keywords)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    found = re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text)
    return {n for n in found if n not in _KEYWORDS}


def exposed_names(metric: MetricWrapperBase) -> set[str]:
    """The series names a prometheus_client metric exposes."""
    base = metric._name  # the name without the type's suffixes
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_count", "_sum"],
        "gauge": [""],
        "summary": ["_count", "_sum", ""],
    }[metric._type]
    return {base + s for s in suffixes}


def service_names() -> set[str]:
    from kb_platform.encoder_service.metrics import metrics as encoder_metrics
    from kb_platform.resilience.metrics import breaker_metrics
    from kb_platform.serving.metrics import metrics as serving_metrics

    names: set[str] = set()
    for group in (encoder_metrics(), serving_metrics(), breaker_metrics()):
        for metric in vars(group).values():
            names |= exposed_names(metric)
    return names


def check_dashboards(
    prometheus: Prometheus, known: set[str], with_data: set[str], timeout_s: float = 30.0
) -> int:
    """Every expression parses and names only ``known`` metrics; those naming only
    ``with_data`` metrics return a result within ``timeout_s``. Returns how many it checked."""
    checked = 0
    for uid, title, expr in expressions():
        names = metric_names(expr)
        assert names, (uid, title, expr)
        assert names <= known, (uid, title, names - known)
        deadline = time.monotonic() + timeout_s
        result = prometheus.query(expr)  # a parse error fails here (HTTP 400, "bad_data")
        while names <= with_data and not result:
            assert time.monotonic() < deadline, f"{uid} / {title}: no data for {expr}"
            time.sleep(1)
            result = prometheus.query(expr)
        checked += 1
    return checked

"""The committed dashboards are what the generator makes, and the expression checker that the
integration test runs on them rejects what it must."""

from __future__ import annotations

import json

import yaml

from kb_platform.config import REPO_ROOT
from kb_platform.observability.dashboards import DATASOURCE, OUT, as_json, dashboards
from kb_platform_tests.dashboard_checks import exposed_names, expressions, metric_names


def test_committed_json_is_what_the_generator_makes() -> None:
    generated = dashboards()
    assert {p.stem for p in OUT.glob("*.json")} == set(generated)
    for uid, dashboard in generated.items():
        assert (OUT / f"{uid}.json").read_text() == as_json(dashboard) + "\n", (
            f"{uid}: run python -m kb_platform.observability.dashboards"
        )


def test_every_panel_queries_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert [d["name"] for d in provisioned["datasources"]] == [DATASOURCE]
    for path in OUT.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["panels"] and all(p["datasource"] == DATASOURCE for p in board["panels"])
        assert all(p["targets"] for p in board["panels"]), path.name
    assert len(list(expressions())) >= 30


def test_metric_names_are_what_an_expression_selects() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, asset) (rate(kb_asset_processing_seconds_bucket"
        '{modality="image", asset=~"ocr.*"}[5m]))) > on (modality) kb_processing_limit_seconds'
    )
    assert metric_names(expr) == {
        "kb_asset_processing_seconds_bucket",
        "kb_processing_limit_seconds",
    }
    assert metric_names("time() - kb_training_last_run_timestamp_seconds offset 5m") == {
        "kb_training_last_run_timestamp_seconds"
    }
    # a misspelt metric is what the dashboard check must catch: it is a name of its own
    assert metric_names("sum(rate(kb_documents_procesed_total[5m]))") == {
        "kb_documents_procesed_total"
    }


def test_exposed_names_follow_the_metric_type() -> None:
    from prometheus_client import Counter, Histogram

    assert exposed_names(Counter("kb_x", "x", registry=None)) == {"kb_x_total"}
    assert exposed_names(Histogram("kb_y_seconds", "y", registry=None)) == {
        "kb_y_seconds_bucket",
        "kb_y_seconds_count",
        "kb_y_seconds_sum",
    }

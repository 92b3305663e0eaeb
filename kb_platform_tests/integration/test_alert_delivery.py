"""One alert end to end with the local stack's timings: the pipeline exporter stops, the real
Prometheus (10 s scrapes and evaluations, as deploy/prometheus/prometheus.yml) fires
KbExporterDown, the real Alertmanager (deploy/prometheus/alertmanager.local.yml) routes it to
both receivers, and the test's webhook receiver gets it. The time from fault to notification is
printed (the seed's target: under a minute), not asserted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kb_platform.config import REPO_ROOT
from kb_platform_tests.ports import free_port
from kb_platform_tests.prometheus_server import running_alertmanager, running_prometheus


class Receiver:
    """Webhook notifications as they arrive: (path, payload, monotonic time)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict, float]] = []
        self.arrived = threading.Condition()

    def wait_for(self, predicate, timeout_s: float) -> tuple[str, dict, float]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                found = [r for r in self.received if predicate(r)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing matching in {timeout_s}s: {self.received}")
                self.arrived.wait(left)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with got.arrived:
                got.received.append((self.path, body, time.monotonic()))
                got.arrived.notify_all()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield got, server.server_address[1]
    server.shutdown()
    server.server_close()


def fired(name: str, path: str):  # type: ignore[no-untyped-def]
    def matches(notification: tuple[str, dict, float]) -> bool:
        where, body, _ = notification
        return where == path and any(
            a["status"] == "firing" and a["labels"]["alertname"] == name for a in body["alerts"]
        )

    return matches


def test_a_stopped_exporter_pages_and_reaches_slack(
    served_exporter, receiver, tmp_path: Path
) -> None:
    got, webhook_port = receiver
    config = (REPO_ROOT / "deploy/prometheus/alertmanager.local.yml").read_text()
    config = config.replace("KB_ALERT_WEBHOOK_PORT", str(webhook_port))
    with (
        running_alertmanager(tmp_path / "alertmanager", config) as alertmanager,
        running_prometheus(
            tmp_path / "prometheus",
            {"kb-exporter": served_exporter.address},
            alertmanager=alertmanager,
            interval="10s",
        ) as prometheus,
    ):
        prometheus.wait_for('up{job="kb-exporter"}', 1.0, timeout_s=30)
        served_exporter.stop()  # the fault: the exporter stops answering
        stopped = time.monotonic()
        _, page, paged = got.wait_for(fired("KbExporterDown", "/pagerduty"), timeout_s=120)
        _, chat, _ = got.wait_for(fired("KbExporterDown", "/slack"), timeout_s=30)
    alert = next(a for a in page["alerts"] if a["labels"]["alertname"] == "KbExporterDown")
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks/KbExporterDown.md"
    assert chat["commonLabels"]["alertname"] == "KbExporterDown"
    print(f"fault to notification: {paged - stopped:.1f} s")

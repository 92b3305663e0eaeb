"""`kb-platform services up monitoring`: the pipeline exporter, the node and Elasticsearch
exporters, Alertmanager and Prometheus start from deploy/prometheus/, Prometheus scrapes them
and loads every rule; a second `up` is harmless and `down` leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from kb_platform.config import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "local" / "monitoring" / "monitoring.sh"
PROMETHEUS = "http://127.0.0.1:9090"
SCRAPED = {"kb-exporter", "kafka", "node", "elasticsearch", "prometheus", "alertmanager"}


def monitoring(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=180, env=os.environ
    )


def running(pid: str) -> bool:
    """The process exists and is no zombie (exited, its parent not having reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def healthy_jobs() -> set[str]:
    targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]
    return {t["labels"]["job"] for t in targets["activeTargets"] if t["health"] == "up"}


def test_monitoring_starts_scrapes_the_stack_and_stops() -> None:
    started = monitoring("up")
    assert started.returncode == 0, started.stderr
    try:
        again = monitoring("up")
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr
        deadline = time.monotonic() + 60
        while not (jobs := healthy_jobs()) >= SCRAPED and time.monotonic() < deadline:
            time.sleep(1)
        assert jobs >= SCRAPED
        groups = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) >= 15 and all(r["health"] == "ok" for r in rules), rules
        status = monitoring("status")
        assert status.returncode == 0, status.stdout
    finally:
        pids = [
            p.read_text().strip()
            for p in (REPO_ROOT / ".kb-local" / "monitoring").glob("*/*.pid")
            if p.read_text().strip()
        ]
        stopped = monitoring("down")
    assert stopped.returncode == 0, stopped.stderr
    assert pids and not [p for p in pids if running(p)]
    assert monitoring("status").returncode == 3

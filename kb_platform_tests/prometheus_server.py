"""A real Prometheus (and Alertmanager) for a test: Debian's binaries (deploy/local/setup.sh),
on free loopback ports, with the project's alert rules, scraping the targets the test names."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kb_platform.config import REPO_ROOT
from kb_platform_tests.ports import free_port

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: deploy/local/setup.sh installs it")
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def names(self) -> set[str]:
        """Every metric name Prometheus holds samples of."""
        answer = httpx.get(f"{self.url}/api/v1/label/__name__/values", timeout=10).json()
        return set(answer["data"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when it has no result."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (got := self.value(expr)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} = {got} after {timeout_s}s, expected {expected}")
            time.sleep(0.5)


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited on start: {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"not ready after 60 s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def _started(command: list[str], url: str, log: Path) -> Iterator[None]:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_prometheus(
    work: Path, targets: dict[str, str], alertmanager: str | None = None, interval: str = "1s"
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (job name -> host:port) every ``interval``, evaluating the
    project's rules as often, sending alerts to ``alertmanager`` (host:port) when given."""
    work.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES / "*.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        binary("prometheus"),
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _started(command, url, work / "prometheus.log"):
        yield Prometheus(url)


@contextlib.contextmanager
def running_alertmanager(work: Path, config: str) -> Iterator[str]:
    """Alertmanager with ``config`` (YAML text); yields its host:port."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "alertmanager.yml").write_text(config)
    port = free_port()
    command = [
        binary("prometheus-alertmanager"),
        f"--config.file={work / 'alertmanager.yml'}",
        f"--storage.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with _started(command, f"http://127.0.0.1:{port}", work / "alertmanager.log"):
        yield f"127.0.0.1:{port}"

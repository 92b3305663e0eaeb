"""Runs the BentoML service as a child process (``bentoml serve``) and waits for its probes:
what the tests, the benchmark and an operator's smoke check share."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from kb_platform.config import REPO_ROOT

log = logging.getLogger(__name__)

SERVICE = "bentos/rag/service.py:RagService"
ENCODER_SERVICE = "bentos/encoder/service.py:EncoderService"


def probe(url: str, timeout: float = 2.0) -> int:
    """HTTP status of a GET, 0 when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return 0


def private_bentoml_home(path: Path) -> Path:
    """A BENTOML_HOME of its own that shares the model store: BentoML wipes and reuses
    ``$BENTOML_HOME/prometheus_multiproc_dir`` on every start, so two services on one home would
    erase and mix each other's metrics."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    models = Path(BentoMLContainer.bentoml_home.get()) / "models"
    models.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    link = path / "models"
    if not link.exists():
        link.symlink_to(models, target_is_directory=True)
    return path


@dataclass
class ServiceProcess:
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    readiness: list[tuple[float, int]] = field(default_factory=list)  # (seconds, /readyz)
    service: str = SERVICE  # bentoml's "path:Class" of the service to serve

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", **self.env}
        bentoml = Path(sys.executable).with_name("bentoml")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [str(bentoml), "serve", self.service, "--host", "127.0.0.1"]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers form one process group to stop
            )
        self.started_at = time.monotonic()

    def wait_ready(self, timeout: float = 180.0, interval: float = 0.25) -> float:
        """Seconds from start to the first ready answer; each probe's result is kept."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}: {self.tail()}")
            status = probe(f"{self.url}/readyz")
            elapsed = time.monotonic() - self.started_at
            self.readiness.append((elapsed, status))
            if status == 200:
                return elapsed
            time.sleep(interval)
        raise TimeoutError(f"service not ready after {timeout}s: {self.tail()}")

    @contextmanager
    def running(self, timeout: float = 180.0) -> Iterator[ServiceProcess]:
        """Started and ready inside the block, stopped after it (also when it fails)."""
        self.start()
        try:
            self.wait_ready(timeout=timeout)
            yield self
        finally:
            self.stop()

    def rss_bytes(self) -> int:
        """Resident memory of the service's whole process tree."""
        if self.process is None:
            return 0
        try:
            root = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

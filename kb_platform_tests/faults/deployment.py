"""The Dagster deployment the fault matrix breaks: a code server (gRPC), the daemon (sensors, run
queue, warm run workers) and the production instance storage (PostgreSQL), each a process of
its own that a fault can kill and start again, as Kubernetes runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from dagster import DagsterInstance

from kb_platform.config import REPO_ROOT

VENV_BIN = Path(os.environ.get("KB_VENV", REPO_ROOT / ".venv")) / "bin"


def instance_config() -> dict:
    """The local instance's run queue, warm launcher, retries and monitoring over the
    production storage (PostgreSQL, deploy/dagster/dagster.prod.yaml)."""
    local = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    prod = yaml.safe_load((REPO_ROOT / "deploy" / "dagster" / "dagster.prod.yaml").read_text())
    return {**local, "storage": prod["storage"]}


@dataclass
class Process:
    """One long-running process of the deployment, in a process group of its own (a code
    server and the daemon start children that must go with them)."""

    name: str
    command: list[str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> None:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()

    def kill(self, sig: signal.Signals = signal.SIGKILL, children: bool = True) -> None:
        """``children=False`` kills the process alone (a crash), leaving what it started."""
        if self.popen is None or self.popen.poll() is not None:
            return
        if children:
            os.killpg(self.popen.pid, sig)
        else:
            os.kill(self.popen.pid, sig)
        self.popen.wait(timeout=60)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=30)


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    code_port: int
    location: str = "kb_platform"
    processes: dict[str, Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(instance_config()))
        self.write_workspace([(self.location, self.code_port)])
        self.processes["code_server"] = self.code_server(self.location, self.code_port)
        self.ports["code_server"] = self.code_port
        self.processes["daemon"] = Process(
            "daemon",
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")],
            logs / "daemon.log",
        )

    def code_server(self, location: str, port: int) -> Process:
        return Process(
            f"code_server-{location}",
            [
                str(VENV_BIN / "dagster"),
                "code-server",
                "start",
                "-m",
                "kb_platform.definitions",
                "-d",
                str(REPO_ROOT),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--location-name",
                location,
            ],
            self.home / "logs" / f"code-server-{location}.log",
        )

    def write_workspace(self, locations: list[tuple[str, int]]) -> None:
        grpc = [
            {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": name}}
            for name, port in locations
        ]
        (self.home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": grpc}))

    def instance(self) -> DagsterInstance:
        previous = {k: os.environ.get(k) for k in self.env if k.startswith("KB_PG_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("KB_PG_")})
        try:
            return DagsterInstance.from_config(str(self.home))
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start(self, name: str) -> None:
        self.processes[name].start(self.env)
        if name in self.ports:
            wait_for_port(self.ports[name], 120)

    def add_code_server(self, name: str, location: str, port: int) -> None:
        self.processes[name] = self.code_server(location, port)
        self.ports[name] = port
        self.start(name)

    def restart(self, name: str) -> None:
        self.processes[name].stop()
        self.start(name)

    def start_all(self) -> None:
        self.start("code_server")
        self.start("daemon")

    def stop_all(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()


def wait_for_port(port: int, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s:.0f} s")

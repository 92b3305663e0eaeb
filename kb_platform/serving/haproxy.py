"""HAProxy in front of the RAG service's instances: the config rendered from
deploy/local/proxy/haproxy.cfg.tmpl, the process, and its runtime API (the stats socket) to
read each server's state and to drain or re-enable a server. deploy/local/proxy/proxy.sh uses
the command line:

    python -m kb_platform.serving.haproxy render --port 3040 --stats-socket S --pidfile P \\
        rag1=127.0.0.1:3031 rag2=127.0.0.1:3032
    python -m kb_platform.serving.haproxy show --stats-socket S
    python -m kb_platform.serving.haproxy state --stats-socket S rag1 drain
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from kb_platform.config import REPO_ROOT

log = logging.getLogger(__name__)

TEMPLATE = REPO_ROOT / "deploy" / "local" / "proxy" / "haproxy.cfg.tmpl"
BACKEND = "rag"

# srv_op_state of `show servers state`
STOPPED, STARTING, RUNNING, STOPPING = 0, 1, 2, 3
FORCED_MAINT, FORCED_DRAIN = 0x01, 0x08


@dataclass(frozen=True)
class Checks:
    """Health checks of /readyz: every ``inter_ms``; ``rise`` passes put a server in rotation,
    ``fall`` failures take it out."""

    inter_ms: int = 500
    rise: int = 2
    fall: int = 2


@dataclass(frozen=True)
class ServerState:
    name: str
    op_state: int  # STOPPED .. STOPPING
    admin_state: int  # mask of FORCED_MAINT, FORCED_DRAIN, ...
    sessions: int  # requests it holds now (scur)
    status: str  # as the stats page shows it: UP, DOWN, DRAIN, MAINT, "DOWN 1/2", ...

    @property
    def up(self) -> bool:
        return self.op_state == RUNNING

    @property
    def drained(self) -> bool:
        return bool(self.admin_state & FORCED_DRAIN)


def render(
    servers: dict[str, str],
    *,
    port: int,
    stats_socket: Path,
    pidfile: Path,
    checks: Checks = Checks(),
    bind_host: str = "127.0.0.1",
    template: Path = TEMPLATE,
) -> str:
    """The config for ``servers`` (name -> host:port), in the order given."""
    lines = "\n".join(f"    server {name} {address}" for name, address in servers.items())
    return Template(template.read_text()).substitute(
        servers=lines,
        port=port,
        bind_host=bind_host,
        stats_socket=stats_socket,
        pidfile=pidfile,
        inter_ms=checks.inter_ms,
        rise=checks.rise,
        fall=checks.fall,
    )


class RuntimeApi:
    """HAProxy's runtime API over its stats socket, one command per connection."""

    def __init__(self, path: Path, timeout_s: float = 5.0):
        self.path = path
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_state(self, server: str, state: str, backend: str = BACKEND) -> None:
        """``ready``, ``drain`` or ``maint``."""
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:  # the command answers nothing when it worked
            raise RuntimeError(f"set server {backend}/{server} state {state}: {answer}")

    def servers(self, backend: str = BACKEND) -> dict[str, ServerState]:
        stats = {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }
        lines = self.command(f"show servers state {backend}").splitlines()
        header = lines[1].lstrip("# ").split()
        found = {}
        for line in lines[2:]:
            if not line.strip() or line.startswith("#"):
                continue
            row = dict(zip(header, line.split(), strict=False))
            name = row["srv_name"]
            found[name] = ServerState(
                name=name,
                op_state=int(row["srv_op_state"]),
                admin_state=int(row["srv_admin_state"]),
                sessions=int(stats[name]["scur"] or 0),
                status=stats[name]["status"],
            )
        return found

    def server(self, name: str, backend: str = BACKEND) -> ServerState:
        return self.servers(backend)[name]

    def backend_counters(self, backend: str = BACKEND) -> dict[str, int]:
        """The backend's retries, redispatches and error counters since start."""
        for row in csv.DictReader(io.StringIO(self.command("show stat").lstrip("# "))):
            if row["pxname"] == backend and row["svname"] == "BACKEND":
                keys = ("wretr", "wredis", "econ", "eresp", "hrsp_5xx", "stot")
                return {k: int(row[k] or 0) for k in keys}
        raise KeyError(backend)


@dataclass
class HAProxy:
    """One HAProxy process in the foreground (``-db``), its config and socket under ``work``."""

    servers: dict[str, str]
    port: int
    work: Path
    checks: Checks = field(default_factory=Checks)
    binary: str = "haproxy"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.work / "haproxy.cfg"

    @property
    def log_path(self) -> Path:
        return self.work / "haproxy.log"

    @property
    def api(self) -> RuntimeApi:
        return RuntimeApi(self.work / "haproxy.sock")

    def write_config(self) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render(
                self.servers,
                port=self.port,
                stats_socket=self.work / "haproxy.sock",
                pidfile=self.work / "haproxy.pid",
                checks=self.checks,
            )
        )
        return self.config_path

    def start(self, timeout_s: float = 15.0) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise FileNotFoundError(
                f"{self.binary} not found: install it (Debian: apt-get install -y haproxy)"
            )
        config = self.write_config()
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"invalid config {config}: {check.stderr.decode()[-2000:]}")
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"haproxy exited with {self.process.returncode}: see {self.log_path}"
                )
            try:
                self.api.servers()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"haproxy's stats socket did not answer in {timeout_s}s")

    def wait(
        self,
        predicate: Callable[[dict[str, ServerState]], bool],
        what: str,
        timeout_s: float = 120.0,
        interval_s: float = 0.1,
    ) -> dict[str, ServerState]:
        """Polls the servers' states until ``predicate`` holds; returns those states."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.api.servers()
            if predicate(states):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"haproxy: {what} not reached in {timeout_s:g}s: {states}")
            time.sleep(interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGUSR1)  # soft stop: finishes what it holds
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    @contextmanager
    def running(self) -> Iterator[HAProxy]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="HAProxy in front of the RAG service")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("render", help="print the config")
    cmd.add_argument("--port", type=int, required=True)
    cmd.add_argument("--stats-socket", type=Path, required=True)
    cmd.add_argument("--pidfile", type=Path, required=True)
    cmd.add_argument("--bind-host", default="127.0.0.1")
    cmd.add_argument("--inter-ms", type=int, default=Checks.inter_ms)
    cmd.add_argument("--rise", type=int, default=Checks.rise)
    cmd.add_argument("--fall", type=int, default=Checks.fall)
    cmd.add_argument("servers", nargs="+", help="name=host:port")
    show = sub.add_parser("show", help="each server's state, from the stats socket")
    show.add_argument("--stats-socket", type=Path, required=True)
    state = sub.add_parser("state", help="set a server's state: ready, drain or maint")
    state.add_argument("--stats-socket", type=Path, required=True)
    state.add_argument("server")
    state.add_argument("state", choices=["ready", "drain", "maint"])
    args = parser.parse_args()
    if args.command == "render":
        servers = dict(item.split("=", 1) for item in args.servers)
        config = render(
            servers,
            port=args.port,
            stats_socket=args.stats_socket,
            pidfile=args.pidfile,
            checks=Checks(args.inter_ms, args.rise, args.fall),
            bind_host=args.bind_host,
        )
        sys.stdout.write(config)
    elif args.command == "show":
        for server in RuntimeApi(args.stats_socket).servers().values():
            sys.stdout.write(
                f"{server.name}: {server.status} (requests now {server.sessions}"
                f"{', drained' if server.drained else ''})\n"
            )
    else:
        RuntimeApi(args.stats_socket).set_state(args.server, args.state)


if __name__ == "__main__":
    main()

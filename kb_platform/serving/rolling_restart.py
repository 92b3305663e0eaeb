"""A rolling restart of the RAG service's instances behind HAProxy, one at a time, with no
request lost:

1. drain the instance over HAProxy's runtime API: it gets no new request, the ones it holds
   finish (on SIGTERM BentoML's uvicorn worker finishes in-flight requests too, but its
   listening socket stays open in the circus arbiter until the end, so a connection that arrives
   after the signal is accepted by the kernel and then reset: stopping without draining first
   loses requests);
2. wait until HAProxy counts no request on it, then stop it (SIGTERM to its process group);
3. wait until HAProxy's /readyz checks see it down, start the new one on the same port;
4. wait until HAProxy's checks see it ready (``rise`` passes in a row: models warm, alias
   answering) while it is still drained, then put it back in rotation; then the next instance.

Each instance's timeline is returned: how long it was out of rotation and where the time went.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kb_platform.config import REPO_ROOT
from kb_platform.serving.haproxy import HAProxy

log = logging.getLogger(__name__)


class Instance(Protocol):
    """What a rolling restart needs of an instance (kb_platform.serving.launcher.ServiceProcess
    is one): stop it, start it again on the same address."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


Hook = Callable[[str, str], None]  # (server name, phase) as each phase is reached


@dataclass
class InstanceRoll:
    name: str
    out_at: float = 0.0  # drained: out of rotation (time.monotonic())
    drained_at: float = 0.0  # no request left on it
    stopped_at: float = 0.0
    seen_down_at: float = 0.0  # HAProxy's checks saw it down
    started_at: float = 0.0
    seen_up_at: float = 0.0  # HAProxy's checks saw the new one ready (rise)
    back_at: float = 0.0  # in rotation again

    @property
    def out_s(self) -> float:
        return self.back_at - self.out_at

    @property
    def drain_s(self) -> float:
        return self.drained_at - self.out_at

    @property
    def stop_s(self) -> float:
        return self.stopped_at - self.drained_at

    @property
    def start_to_ready_s(self) -> float:
        return self.seen_up_at - self.started_at


@dataclass
class RollingRestart:
    proxy: HAProxy
    instances: dict[str, Instance]  # HAProxy server name -> its instance
    drain_timeout_s: float = 150.0  # the longest request HAProxy lets run (timeout server)
    ready_timeout_s: float = 300.0
    # False: stop at once, leaving it to the checks to notice (for comparison only: requests
    # that reach the stopping instance are reset, unless HAProxy can retry them)
    drain: bool = True
    on_phase: Hook | None = None
    rolls: list[InstanceRoll] = field(default_factory=list)

    def _phase(self, name: str, phase: str) -> None:
        log.info("rolling restart: %s %s", name, phase)
        if self.on_phase is not None:
            self.on_phase(name, phase)

    def _all_up(self, timeout_s: float) -> None:
        self.proxy.wait(
            lambda states: all(s.up and not s.drained for s in states.values()),
            "every server up and in rotation",
            timeout_s,
        )

    def run(self) -> list[InstanceRoll]:
        self._all_up(30.0)  # never take one out while another is not serving
        for name, instance in self.instances.items():
            self.rolls.append(self.restart(name, instance))
            self._all_up(30.0)
        return self.rolls

    def restart(self, name: str, instance: Instance) -> InstanceRoll:
        api, roll = self.proxy.api, InstanceRoll(name)
        roll.out_at = time.monotonic()
        if self.drain:
            api.set_state(name, "drain")
            self._phase(name, "drain")
            self.proxy.wait(
                lambda states: states[name].sessions == 0,
                f"{name} holding no request",
                self.drain_timeout_s,
                interval_s=0.05,
            )
            self._phase(name, "drained")
        roll.drained_at = time.monotonic()
        instance.stop()
        roll.stopped_at = time.monotonic()
        self._phase(name, "stopped")
        self.proxy.wait(lambda states: not states[name].up, f"{name} seen down", 30.0)
        roll.seen_down_at = time.monotonic()
        if not self.drain:  # keep it out until HAProxy's checks have seen the new one ready
            api.set_state(name, "drain")
        roll.started_at = time.monotonic()
        instance.start()
        self._phase(name, "started")
        self.proxy.wait(
            lambda states: states[name].up, f"{name} seen ready", self.ready_timeout_s, 0.1
        )
        roll.seen_up_at = time.monotonic()
        api.set_state(name, "ready")
        roll.back_at = time.monotonic()
        self._phase(name, "ready")
        log.info(
            "%s out of rotation %.1fs (drain %.2fs, stop %.1fs, start to ready %.1fs)",
            name,
            roll.out_s,
            roll.drain_s,
            roll.stop_s,
            roll.start_to_ready_s,
        )
        return roll


@dataclass
class ScriptInstance:
    """An instance that deploy/local/rag/rag.sh runs: its own KB_LOCAL_DIR and KB_RAG_PORT
    (``up`` returns once it is ready, ``down`` stops it with SIGTERM, KILL after 30 s)."""

    local_dir: Path
    port: int

    def _run(self, action: str) -> None:
        env = {**os.environ, "KB_LOCAL_DIR": str(self.local_dir), "KB_RAG_PORT": str(self.port)}
        script = REPO_ROOT / "deploy" / "local" / "rag" / "rag.sh"
        done = subprocess.run(["bash", str(script), action], env=env, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"rag.sh {action} failed: {done.stderr.decode()[-2000:]}")

    def start(self) -> None:
        self._run("up")

    def stop(self, timeout: float = 30.0) -> None:
        self._run("down")


def main() -> None:
    """Rolls the rag.sh instances behind deploy/local/proxy/proxy.sh's HAProxy."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--proxy-dir", type=Path, required=True, help="holds haproxy.sock")
    parser.add_argument("instances", nargs="+", help="server=KB_LOCAL_DIR:port, in order")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    instances: dict[str, Instance] = {}
    for item in args.instances:
        name, rest = item.split("=", 1)
        local_dir, port = rest.rsplit(":", 1)
        instances[name] = ScriptInstance(Path(local_dir), int(port))
    proxy = HAProxy({}, 0, args.proxy_dir)  # the running one: only its stats socket is used
    for roll in RollingRestart(proxy, instances).run():
        log.info("%s was out of rotation %.1fs", roll.name, roll.out_s)


if __name__ == "__main__":
    main()

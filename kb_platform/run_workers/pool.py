"""A few warm worker processes (``kb_platform.run_workers.worker``) and which run each is on."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

log = logging.getLogger(__name__)


@dataclass
class Worker:
    process: subprocess.Popen[str]
    created: float  # psutil create_time: a pid with another start time is another process
    ready_fd: int  # the worker writes one line to it once warm (then closes it)
    runs: list[str] = field(default_factory=list)
    warm: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def identity(self) -> str:
        return f"{self.pid}:{self.created}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def is_warm(self) -> bool:
        if not self.warm and fd_readable(self.ready_fd):
            self.warm = True  # "ready" written, or the worker died (then it is not alive)
            os.close(self.ready_fd)
        return self.warm

    def retire(self) -> None:
        """No more runs: it exits once the runs already written to it are done."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        if not self.warm:  # never read to its end: close it here, not in is_warm
            self.warm = True
            os.close(self.ready_fd)


def fd_readable(fd: int) -> bool:
    """Whether ``fd`` has data or reached its end, without blocking (poll, not select: a
    long-running daemon's descriptors can number above select's 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def is_running(identity: str) -> bool:
    """Whether the worker process ``identity`` ("pid:create_time") is still alive."""
    pid, _, created = identity.partition(":")
    try:
        process = psutil.Process(int(pid))
        return f"{process.create_time()}" == created and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError):
        return False


class WorkerPool:
    """``size`` workers started from ``command`` in ``cwd``, each given at most ``max_runs``.

    A worker is free when every run it was given has finished (``is_finished(run_id)``, read
    from the instance); a worker that exited or used up its runs is replaced. A run goes to a
    free warm worker; while none is free but a warm one is busy, it waits for that one (up to
    ``wait_for_warm_s``) rather than take a worker still importing (half a minute or more).
    """

    def __init__(
        self,
        command: Sequence[str],
        cwd: str | None,
        size: int,
        max_runs: int,
        is_finished: Callable[[str], bool],
        wait_for_warm_s: float = 60.0,
    ) -> None:
        self._command = list(command)
        self._cwd = cwd
        self._size = size
        self._max_runs = max_runs
        self._is_finished = is_finished
        self._wait_for_warm_s = wait_for_warm_s
        self._workers: list[Worker] = []
        self._lock = threading.Lock()

    def _start(self) -> Worker:
        ready_read, ready_write = os.pipe()
        process = subprocess.Popen(
            [*self._command, f"--ready-fd={ready_write}"],
            cwd=self._cwd,
            stdin=subprocess.PIPE,
            text=True,
            pass_fds=[ready_write],
        )
        os.close(ready_write)
        worker = Worker(process, psutil.Process(process.pid).create_time(), ready_read)
        log.info("started run worker %d", worker.pid)
        return worker

    def _free(self, worker: Worker) -> bool:
        """Whether its last run has finished (workers are alive and have runs left: see
        _replenish, which runs first)."""
        return all(self._is_finished(run_id) for run_id in worker.runs[-1:])

    def _replenish(self) -> None:
        usable = [w for w in self._workers if w.alive() and len(w.runs) < self._max_runs]
        for worker in self._workers:
            if worker not in usable:
                worker.retire()
        self._workers = usable
        while len(self._workers) < self._size:
            self._workers.append(self._start())

    def warm(self) -> None:
        with self._lock:
            self._replenish()

    def _choose(self) -> Worker:
        deadline = time.monotonic() + self._wait_for_warm_s
        while True:
            self._replenish()
            free = [w for w in self._workers if self._free(w)]
            warm = [w for w in free if w.is_warm()]
            if warm:
                return warm[0]
            busy_warm = any(w.is_warm() for w in self._workers if w not in free)
            if not busy_warm or time.monotonic() >= deadline:
                if free:
                    return free[0]  # still warming: a head start all the same
                worker = self._start()  # more runs at once than workers: one more process
                self._workers.append(worker)
                return worker
            time.sleep(0.1)

    def assign(self, run_id: str, instance_ref: str) -> Worker:
        """Gives the run to a worker (see the class) and returns it."""
        with self._lock:
            worker = self._choose()
            assert worker.process.stdin is not None
            worker.process.stdin.write(
                json.dumps({"run_id": run_id, "instance_ref": instance_ref}) + "\n"
            )
            worker.process.stdin.flush()
            worker.runs.append(run_id)
            if len(worker.runs) >= self._max_runs:
                self._workers.append(self._start())  # its successor warms up meanwhile
            return worker

    def close(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.retire()
            self._workers = []

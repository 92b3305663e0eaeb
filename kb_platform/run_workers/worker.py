"""``python -m kb_platform.run_workers.worker``: executes runs named on stdin, one at a time.

Each stdin line is ``{"run_id": ..., "instance_ref": <serialized InstanceRef>}``. The run is
executed exactly as Dagster's own run process does it (``dagster api execute_run``): events go
to the instance's storage, the launcher reads nothing back. The worker exits on end of input
(its launcher is gone) or after ``--max-runs`` runs (the launcher starts a fresh one), so
memory a run leaves behind is bounded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from importlib import import_module
from typing import Any

from kb_platform.run_workers.memory import release_freed_memory

log = logging.getLogger("kb_platform.run_workers.worker")
CANCEL_POLL_S = 2.0


def warm_up(modules: list[str]) -> float:
    """Imports what every run needs before any run arrives; returns the seconds it took."""
    started = time.monotonic()
    for name in modules:
        module_name, _, function = name.partition(":")
        module = import_module(module_name)
        if function:
            getattr(module, function)()
    return time.monotonic() - started


def _interrupt_while_canceling(instance_ref: Any, run_id: str, done: threading.Event) -> None:
    """Interrupts this process every few seconds while the run is being canceled.

    One SIGINT is not always enough: Dagster turns an interrupt raised inside a step that has
    a RetryPolicy into a retry of that step. Another interrupt between steps (or during the
    retry's back-off) is seen by the executor, which then stops the run as canceled.
    """
    from dagster import DagsterInstance, DagsterRunStatus

    with DagsterInstance.from_ref(instance_ref) as instance:  # its own connections
        while not done.wait(CANCEL_POLL_S):
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status is DagsterRunStatus.CANCELING:
                os.kill(os.getpid(), signal.SIGINT)


def execute(run_id: str, serialized_instance_ref: str) -> None:
    from dagster import DagsterInstance
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    instance_ref = deserialize_value(serialized_instance_ref, InstanceRef)
    done = threading.Event()
    # SIGINT (the launcher's terminate) interrupts the run at Dagster's checkpoints and cancels
    # it, as in Dagster's own run process; between runs it is ignored (see main).
    with capture_interrupts(), DagsterInstance.from_ref(instance_ref) as instance:
        watcher = threading.Thread(
            target=_interrupt_while_canceling, args=(instance_ref, run_id, done), daemon=True
        )
        watcher.start()
        try:
            _execute_run_command_body(run_id, instance, lambda _event: None, False)
        finally:
            done.set()
            watcher.join()
    # capture_interrupts maps SIGTERM onto the SIGINT handler it restores (ignored here): an
    # idle worker still ends at once when its service is stopped.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preload", action="append", default=[], help="module[:function]")
    parser.add_argument("--max-runs", type=int, default=100)
    parser.add_argument("--ready-fd", type=int, help="written to, then closed, once warm")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # An interrupt meant for a run that has just ended must not kill an idle worker (and the
    # run the launcher may be writing to it); the daemon's exit closes stdin instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seconds = warm_up(args.preload)
    log.info("worker warm in %.1f s (%s)", seconds, ", ".join(args.preload) or "nothing preloaded")
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    done = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        order = json.loads(line)
        started = time.monotonic()
        try:
            execute(order["run_id"], order["instance_ref"])
        except Exception:  # the run's failure is in its event log; the worker goes on
            log.exception("run %s ended with an error outside its steps", order["run_id"])
        done += 1
        before, after = release_freed_memory()
        log.info(
            "run %s done in %.1f s (%d/%d); resident %d MiB, %d after returning freed memory",
            order["run_id"],
            time.monotonic() - started,
            done,
            args.max_runs,
            before >> 20,
            after >> 20,
        )
        if done >= args.max_runs:
            break


if __name__ == "__main__":
    main()

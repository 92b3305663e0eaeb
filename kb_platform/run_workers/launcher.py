"""``WarmRunLauncher``: Dagster's run launcher for the local and single-host deployments.

Configured in ``dagster.yaml`` (``run_launcher: module: kb_platform.run_workers.launcher``).
Runs of a Python code location that uses this environment's interpreter go to a warm worker
(``WorkerPool``); anything else falls back to Dagster's ``DefaultRunLauncher``. Each run is
tagged with its worker's identity, which is what termination and run monitoring use, so the
webserver (which holds no pool) can cancel a run the daemon launched.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from typing import Any, Self

from dagster import Field, Int, Noneable
from dagster import _check as check
from dagster._core.launcher import (
    CheckRunHealthResult,
    DefaultRunLauncher,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.remote_origin import RemoteJobOrigin
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from kb_platform.run_workers.pool import WorkerPool, is_running

WORKER_TAG = "kb/run-worker"  # "pid:create_time" of the process executing the run
DEFAULT_PRELOAD = [
    "kb_platform.definitions",
    "kb_platform.quality.expectations:expectations_module",
    "kb_platform.isolation:start_fork_server",
    "kb_platform.run_workers.warmup:models",
]


def in_daemon_process() -> bool:
    """Whether this is the Dagster daemon (``dagster-daemon run``, or ``python -m
    dagster._daemon`` as ``dagster dev`` starts it): the only process that launches runs, so
    the only one that keeps workers warm ahead of the first run."""
    program = sys.argv[0] if sys.argv else ""
    return program.endswith("dagster-daemon") or program.endswith("_daemon/__main__.py")


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(
        self,
        workers: int = 2,
        max_runs_per_worker: int = 100,
        preload: list[str] | None = None,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        self._inst_data = inst_data
        self.workers = check.int_param(workers, "workers")
        self.max_runs_per_worker = check.int_param(max_runs_per_worker, "max_runs_per_worker")
        self.preload = list(DEFAULT_PRELOAD if preload is None else preload)
        self._pools: dict[tuple[str, str | None], WorkerPool] = {}
        self._fallback = DefaultRunLauncher()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "workers": Field(Int, default_value=2, description="warm workers kept ready"),
            "max_runs_per_worker": Field(
                Int, default_value=100, description="runs before a worker is replaced"
            ),
            "preload": Field(
                Noneable([str]),
                default_value=None,
                description="module[:function] a worker imports (and calls) before its first run",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        self._fallback.register_instance(instance)

    def warm(self) -> None:
        """Starts this environment's workers now, ahead of the first run (the daemon does this
        at start-up, see coordinator.py), so a lone first run does not wait for a warm-up."""
        self._pool_for(sys.executable, os.getcwd()).warm()

    def _is_finished(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        return run is None or run.is_finished

    def _pool_for(self, executable: str, cwd: str | None) -> WorkerPool:
        key = (executable, os.path.realpath(cwd) if cwd else None)
        if key not in self._pools:
            command = [executable, "-m", "kb_platform.run_workers.worker"]
            command += [f"--preload={name}" for name in self.preload]
            command += [f"--max-runs={self.max_runs_per_worker}"]
            self._pools[key] = WorkerPool(
                command, key[1], self.workers, self.max_runs_per_worker, self._is_finished
            )
        return self._pools[key]

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None or os.path.realpath(origin.executable_path) != os.path.realpath(
            sys.executable
        ):
            self._fallback.launch_run(context)  # another interpreter: Dagster's own way
            return
        check.inst(run.remote_job_origin, RemoteJobOrigin)
        cwd = getattr(origin.repository_origin.code_pointer, "working_directory", None)
        pool = self._pool_for(sys.executable, cwd)
        worker = pool.assign(run.run_id, serialize_value(self._instance.get_ref()))
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: worker.identity})
        self._instance.report_engine_event(
            f"Run handed to warm worker {worker.pid} ({len(worker.runs)} runs on it).",
            run,
            cls=self.__class__,
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        identity = run.tags.get(WORKER_TAG)
        if identity is None:
            return self._fallback.terminate(run_id)
        self._instance.report_run_canceling(run)
        if not is_running(identity):
            return False
        # The worker interrupts the run at Dagster's checkpoints and reports it canceled.
        os.kill(int(identity.split(":")[0]), signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: Any) -> CheckRunHealthResult:
        identity = run.tags.get(WORKER_TAG)
        if identity is None:  # launched the default way, or being handed to a worker now
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no warm worker recorded")
        if is_running(identity):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker {identity} is gone")

    def dispose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._fallback.dispose()

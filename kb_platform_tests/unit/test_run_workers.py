"""WarmRunLauncher's configuration and health checks on a test instance (its runs on real
workers are in e2e/test_warm_run_workers.py)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import psutil
import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.launcher import WorkerStatus
from dagster._core.test_utils import create_run_for_test, instance_for_test

from kb_platform.config import REPO_ROOT
from kb_platform.run_workers.launcher import WORKER_TAG, WarmRunLauncher, in_daemon_process
from kb_platform.run_workers.pool import fd_readable, is_running


def identity_of(pid: int) -> str:
    return f"{pid}:{psutil.Process(pid).create_time()}"


def test_a_worker_identity_names_one_live_process() -> None:
    assert is_running(identity_of(os.getpid()))
    assert not is_running(f"{os.getpid()}:1.0")  # same pid, another process's start time
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = identity_of(child.pid)
    child.wait()
    assert not is_running(identity)  # exited and reaped
    assert not is_running("not-a-pid:0")


def test_the_instance_config_of_the_repo_selects_the_warm_launcher() -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    with instance_for_test(overrides={"run_launcher": config["run_launcher"]}) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        # as many warm workers as runs may go at once: none waits for a worker to warm up
        assert launcher.workers == config["run_coordinator"]["config"]["max_concurrent_runs"]
        assert launcher.max_runs_per_worker == 100
        assert "kb_platform.definitions" in launcher.preload


def test_run_monitoring_sees_a_dead_worker_as_failed() -> None:
    with instance_for_test(
        overrides={
            "run_launcher": {
                "module": "kb_platform.run_workers.launcher",
                "class": "WarmRunLauncher",
            }
        }
    ) as instance:
        assert isinstance(instance, DagsterInstance)
        launcher = instance.run_launcher
        assert launcher.supports_check_run_worker_health
        gone = create_run_for_test(instance, job_name="j", tags={WORKER_TAG: "999999999:1.0"})
        alive = create_run_for_test(
            instance, job_name="j", tags={WORKER_TAG: identity_of(os.getpid())}
        )
        untagged = create_run_for_test(instance, job_name="j")
        assert launcher.check_run_worker_health(gone).status is WorkerStatus.FAILED
        assert launcher.check_run_worker_health(alive).status is WorkerStatus.RUNNING
        # Not (yet) handed to a worker: nothing to judge, so never failed for that.
        assert launcher.check_run_worker_health(untagged).status is WorkerStatus.RUNNING
        assert not in_daemon_process()  # pytest keeps no warm pool


def test_a_workers_ready_pipe_is_read_above_selects_descriptor_limit() -> None:
    # A daemon that ran for a while can hold more than 1024 descriptors; select() refuses any
    # above that, which once failed every run launch ("filedescriptor out of range in select").
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open {hard} files: no descriptor can pass 1024 here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        reader, writer = os.pipe()
        assert reader > 1024
        assert not fd_readable(reader)
        os.write(writer, b"ready\n")
        assert fd_readable(reader)
        os.close(reader)
        os.close(writer)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

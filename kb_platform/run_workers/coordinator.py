"""``WarmQueuedRunCoordinator``: Dagster's queued run coordinator that, in the daemon, warms
the run launcher's workers at start-up.

Dagster creates the run launcher lazily, at the first launch, so without this the first run
after a restart would wait for its worker to import everything (~35 s here). The coordinator is
created when the daemon starts; everywhere else (webserver, CLI) it only queues runs.
"""

from __future__ import annotations

from typing import Any

from dagster._core.run_coordinator import QueuedRunCoordinator

from kb_platform.run_workers.launcher import WarmRunLauncher, in_daemon_process


class WarmQueuedRunCoordinator(QueuedRunCoordinator):
    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        if in_daemon_process() and isinstance(instance.run_launcher, WarmRunLauncher):
            instance.run_launcher.warm()

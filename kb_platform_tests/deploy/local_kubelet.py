"""The kubelet of one fake node whose pods really run, as processes on this machine, for tests of
what a pod does (the training Job's torchrun) on the throwaway control plane.

kwok plays every node of the test cluster and never runs a container; its stages mark this
node's pods Running but, unlike the other nodes' (kwok_stages/), never complete them. This
kubelet watches the node's Running pods, starts each container's command with the container's
environment (``value`` and ``fieldRef`` entries, such as the Job controller's
``JOB_COMPLETION_INDEX``) over this process's own, and reports the exit as the pod's phase and
container state, which the Job controller then counts. What it does not do, and says so where
it matters: images (the command runs in this virtualenv: ``torchrun`` and ``python`` resolve to
it), volumes (a ``hostPath`` volume's path is used as is, so the test mounts the shared volume
at the same path as on the host), restarts in place (a failed container fails its pod, as with
``restartPolicy: Never``; each failure counts once against the Job's backoffLimit, as a restart
would) and cluster DNS: ``--rdzv-endpoint`` names a pod of a headless Service, which on this
machine is 127.0.0.1 (every pod's processes run here).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from kb_platform_tests.deploy.kube_cluster import (
    GPU_RESOURCE,
    GPU_TAINT,
    LOCAL_NODE_NAME,
    NODE_GROUP_LABEL,
    FakeNode,
    KubeCluster,
)

LOCAL_NODE_GROUP = "local-gpu"
LOCAL_NODE = FakeNode(
    LOCAL_NODE_NAME,
    extended={GPU_RESOURCE: "2"},
    labels={NODE_GROUP_LABEL: LOCAL_NODE_GROUP},
    taints=(GPU_TAINT,),
)
FIELD = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]")
RENDEZVOUS = re.compile(r"^--rdzv-endpoint=([^:]+\.svc):(\d+)$")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_value(pod: dict[str, Any], path: str) -> str:
    """A ``fieldRef``'s value, for the fields the Job controller and our manifests use."""
    metadata = pod["metadata"]
    simple = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata["namespace"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "status.podIP": pod.get("status", {}).get("podIP", ""),
    }
    if path in simple:
        return simple[path]
    match = FIELD.fullmatch(path)
    if not match:
        raise NotImplementedError(f"fieldRef {path!r}")
    return (metadata.get(match.group(1)) or {}).get(match.group(2), "")


def container_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in (source := entry.get("valueFrom") or {}):
            env[entry["name"]] = field_value(pod, source["fieldRef"]["fieldPath"])
        else:
            raise NotImplementedError(f"env {entry['name']}: {source}")
    return env


def local_command(command: list[str]) -> list[str]:
    """The container's command as it runs here: the executable from this virtualenv, a headless
    Service's pod name resolved to this machine."""
    venv_bin = str(Path(sys.executable).parent)
    executable = shutil.which(command[0], path=venv_bin) or command[0]
    return [executable, *(RENDEZVOUS.sub(r"--rdzv-endpoint=127.0.0.1:\2", a) for a in command[1:])]


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    namespace: str
    name: str
    container: dict[str, Any]
    started_at: str
    log: Path


class LocalKubelet:
    """Runs the pods kube-scheduler puts on ``LOCAL_NODE`` (registered by ``start``)."""

    def __init__(self, cluster: KubeCluster, logs: Path, poll_s: float = 0.5) -> None:
        self.cluster = cluster
        self.logs = logs
        self.poll_s = poll_s
        self.started: dict[str, Started] = {}  # by pod uid
        self.exit_codes: dict[str, int] = {}  # by pod name
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-kubelet", daemon=True)
        api = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(api)

    def start(self) -> LocalKubelet:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cluster.apply(LOCAL_NODE.manifest())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for started in self.started.values():
            if started.process.poll() is None:
                os.killpg(started.process.pid, signal.SIGKILL)
                started.process.wait()

    def log_of(self, pod_name: str) -> str:
        path = self.logs / f"{pod_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._sync()
            except Exception as error:  # kept for the test to show
                self.errors.append(repr(error))

    def _sync(self) -> None:
        selector = f"spec.nodeName={LOCAL_NODE_NAME}"
        pods = self.core.api_client.sanitize_for_serialization(
            self.core.list_pod_for_all_namespaces(field_selector=selector)
        )["items"]
        live = {pod["metadata"]["uid"]: pod for pod in pods}
        for uid, pod in live.items():
            running = pod.get("status", {}).get("phase") == "Running"
            if uid not in self.started and running and not pod["metadata"].get("deletionTimestamp"):
                self.started[uid] = self._run(pod)
        for uid, started in self.started.items():
            pod = live.get(uid)
            running = started.process.poll() is None
            if running and (pod is None or pod["metadata"].get("deletionTimestamp")):
                os.killpg(started.process.pid, signal.SIGTERM)  # the pod was deleted
            elif not running and started.name not in self.exit_codes and pod is not None:
                self._report(started, started.process.returncode)

    def _run(self, pod: dict[str, Any]) -> Started:
        (container,) = pod["spec"]["containers"]
        name = pod["metadata"]["name"]
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                local_command(container["command"]),
                env={**os.environ, **container_env(pod, container)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Started(process, pod["metadata"]["namespace"], name, container, _now(), log)

    def _report(self, started: Started, exit_code: int) -> None:
        self.exit_codes[started.name] = exit_code
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started.started_at,
            "finishedAt": _now(),
        }
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": started.container["name"],
                    "image": started.container["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"running": None, "terminated": terminated},
                }
            ],
        }
        self.core.patch_namespaced_pod_status(started.name, started.namespace, {"status": status})

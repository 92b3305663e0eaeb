"""A throwaway Kubernetes control plane for tests: a real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, with kwok playing the nodes (fake nodes whose pods
are marked Running without any container), every process on free 127.0.0.1 ports.

    with running_cluster(tmp_path) as cluster:
        cluster.kubectl("apply", "-f", "deployment.yaml")

The binaries come from ``deploy/cluster/tools.sh path <name>`` (built from the Go module proxy
and cached: run ``bash deploy/cluster/tools.sh install`` once beforehand; a cold build took
~10 min on 2 cores, longer than a test's timeout). Everything the cluster writes stays under
the work folder: PKI (``pki/``), etcd's data, the admin kubeconfig (``kubeconfig``) and one log
per process (``logs/<process>.log``, whose tail a start-up failure shows).

Addresses: every process listens on 127.0.0.1 only. The API also needs virtual addresses that
nothing binds or routes: the Service range and the fake pods' IPs. They are taken from the
documentation ranges of RFC 5737 (198.51.100.0/24 for Services, 203.0.113.0/24 for pods), not
from private ranges, and not from loopback (the API refuses loopback endpoint addresses, which
would break every Service in front of the fake pods). The fake nodes' address is 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kb_platform.config import REPO_ROOT
from kb_platform_tests.deploy.kube_pki import (
    FRONT_PROXY_CLIENT,
    LOOPBACK,
    SERVICE_CIDR,
    Pki,
    make_pki,
    write_kubeconfig,
)
from kb_platform_tests.ports import free_port

TOOLS_SH = REPO_ROOT / "deploy" / "cluster" / "tools.sh"
POD_CIDR = "203.0.113.0/24"  # RFC 5737 TEST-NET-3: the fake pods' IPs
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The annotation kwok selects the nodes it plays by (--manage-nodes-with-annotation-selector).
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NODE_GROUP_LABEL = "kb-platform/node-group"
GPU_RESOURCE = "nvidia.com/gpu"
# kwok's "fast" stages: nodes Ready at once, kept alive by leases; pods Running at once, a Job's
# pods complete at once except on the node whose pods a test runs for real (LOCAL_NODE_NAME).
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-delete.yaml",
)
OWN_STAGES = (Path(__file__).parent / "kwok_stages" / "pod-complete-on-fake-nodes.yaml",)
LOCAL_NODE_NAME = "kb-local-gpu-0"  # named in OWN_STAGES
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 40


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120) -> Any:
    """Polls ``check`` every second until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


class ClusterStartError(RuntimeError):
    """A process of the cluster exited, or the cluster was not ready in time."""


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass(frozen=True)
class FakeNode:
    """A node kwok plays: its allocatable resources, labels and taints."""

    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    pods: str = "110"
    extended: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()

    def manifest(self) -> dict[str, Any]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods, **self.extended}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **self.labels,
                },
            },
            "spec": {"taints": list(self.taints)},
            "status": {"allocatable": resources, "capacity": resources},
        }


GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
DEFAULT_NODES: tuple[FakeNode, ...] = (
    *(FakeNode(f"kwok-cpu-{i}", labels={NODE_GROUP_LABEL: "cpu"}) for i in range(3)),
    FakeNode(
        "kwok-gpu-0",
        extended={GPU_RESOURCE: "4"},
        labels={NODE_GROUP_LABEL: "gpu"},
        taints=(GPU_TAINT,),
    ),
)


def tool_path(name: str) -> Path:
    """The binary (or folder) ``deploy/cluster/tools.sh path <name>`` prints, built if absent."""
    result = subprocess.run(
        ["bash", str(TOOLS_SH), "path", name], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ClusterStartError(f"tools.sh path {name} failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


# --- processes ---------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class KubeCluster:
    """The running cluster: its admin kubeconfig, a kubectl bound to it, and its processes."""

    def __init__(self, workdir: Path, nodes: Sequence[FakeNode]) -> None:
        self.workdir = workdir
        self.nodes = tuple(nodes)
        self.kubeconfig = workdir / "kubeconfig"
        self.logs = workdir / "logs"
        self.api_url = ""
        self.kubectl_path = tool_path("kubectl")
        self._processes: list[_Process] = []
        self._used_ports: set[int] = set()

    # kubectl ----------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl --kubeconfig <this cluster> <args>``; raises KubectlError (with stderr) on
        a non-zero exit unless ``check`` is false."""
        command = [
            str(self.kubectl_path),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def get_json(self, *args: str) -> dict[str, Any]:
        """``kubectl get <args> -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any] | str, *args: str) -> None:
        """``kubectl apply -f -`` of a manifest (a dict, or YAML/JSON text)."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", *args, input=text)

    # start and stop ---------------------------------------------------------------------------

    def _port(self) -> int:
        while (port := free_port()) in self._used_ports:
            pass
        self._used_ports.add(port)
        return port

    def _start(self, name: str, command: Sequence[str | Path]) -> None:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [str(part) for part in command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self._processes.append(_Process(name, popen, log))

    def _check_alive(self, waiting_for: str) -> None:
        for process in self._processes:
            code = process.popen.poll()
            if code is not None:
                raise ClusterStartError(
                    f"{process.name} exited with status {code} while waiting for {waiting_for};"
                    f" last lines of {process.log}:\n{_tail(process.log)}"
                )

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
        """Polls ``ready`` until it is true; fails as soon as a process exits, or at the
        timeout with the tail of every log."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(what)
            with contextlib.suppress(
                httpx.HTTPError, subprocess.SubprocessError, ValueError, KeyError
            ):
                if ready():
                    return
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {process.name} ({process.log}):\n{_tail(process.log, 15)}"
                    for process in self._processes
                )
                raise ClusterStartError(f"{what}: not ready after {timeout:.0f}s\n{tails}")
            time.sleep(0.5)

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = make_pki(self.workdir / "pki")
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url, pki)
        write_kubeconfig(self.kubeconfig, self.api_url, pki)
        self._wait("kube-apiserver /readyz", lambda: self._readyz(pki))
        self._start_controllers(pki)
        self._start_kwok()
        self.apply(
            {"apiVersion": "v1", "kind": "List", "items": [n.manifest() for n in self.nodes]}
        )
        self._wait("the fake nodes to be Ready", self._nodes_ready)
        # The controller-manager's serviceaccount controller makes the namespace's `default`
        # ServiceAccount, without which the API refuses pods.
        self._wait(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        )

    def _start_etcd(self) -> str:
        client, peer = self._port(), self._port()
        client_url, peer_url = f"http://{LOOPBACK}:{client}", f"http://{LOOPBACK}:{peer}"
        self._start(
            "etcd",
            [
                tool_path("etcd"),
                "--name=kb-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kb-test={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",  # a throwaway store: no fsync wait on every write
                "--log-level=warn",
            ],
        )
        self._wait(
            "etcd /health",
            lambda: (
                httpx.get(f"{client_url}/health", timeout=2, trust_env=False).json()["health"]
                == "true"
            ),
        )
        return client_url

    def _start_apiserver(self, etcd_url: str, pki: Pki) -> None:
        port = self._port()
        self.api_url = f"https://{LOOPBACK}:{port}"
        self._start(
            "kube-apiserver",
            [
                tool_path("kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={port}",
                # the default reconciler refuses a loopback advertise address
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={self.workdir / 'pki' / 'apiserver'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.proxy_client_cert}",
                f"--proxy-client-key-file={pki.proxy_client_key}",
                "--authorization-mode=RBAC,Node",
                # on by default too; named so that turning them off is a visible change
                "--enable-admission-plugins=ResourceQuota,LimitRanger",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )

    def _readyz(self, pki: Pki) -> bool:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        response = httpx.get(f"{self.api_url}/readyz", verify=context, timeout=5, trust_env=False)
        return response.status_code == 200

    def _component_serving(self, name: str) -> list[str]:
        """Flags of the controller-manager / scheduler: the admin kubeconfig for everything,
        their own HTTPS (health, metrics) on a free loopback port."""
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={self._port()}",
            f"--cert-dir={self.workdir / 'pki' / name}",
            "--leader-elect=false",
        ]

    def _start_controllers(self, pki: Pki) -> None:
        self._start(
            "kube-controller-manager",
            [
                tool_path("kube-controller-manager"),
                *self._component_serving("kube-controller-manager"),
                # every controller on by default: deployment, replicaset, horizontalpodautoscaling,
                # namespace, resourcequota, serviceaccount, serviceaccount-token, garbagecollector,
                # job, disruption, nodelifecycle, ...
                "--controllers=*",
                # A quota created with the workloads can miss pods made while the controller was
                # counting it; only its full resync (5 min by default) recounts them. A loaded CI
                # machine hit that race (the quota test timed out after 120 s).
                "--resource-quota-sync-period=10s",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # else it makes /usr/libexec/kubernetes/kubelet-plugins/volume/exec
                f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",
            ],
        )
        self._start(
            "kube-scheduler",
            [tool_path("kube-scheduler"), *self._component_serving("kube-scheduler")],
        )

    def _start_kwok(self) -> None:
        stages = tool_path("kwok-stages")
        self._start(
            "kwok",
            [
                tool_path("kwok"),
                *(f"--config={stages / stage}" for stage in KWOK_STAGES),
                *(f"--config={stage}" for stage in OWN_STAGES),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--node-ip={LOOPBACK}",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
            ],
        )

    def _nodes_ready(self) -> bool:
        ready = {
            node["metadata"]["name"]
            for node in self.get_json("nodes")["items"]
            if any(
                condition["type"] == "Ready" and condition["status"] == "True"
                for condition in node.get("status", {}).get("conditions", [])
            )
        }
        return {node.name for node in self.nodes} <= ready

    def stop(self) -> None:
        """Stops the processes one by one, newest first (etcd last, so that the API server can
        still write while it shuts down): SIGTERM, a wait, SIGKILL after a grace time."""
        while self._processes:
            process = self._processes.pop()
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()


@contextlib.contextmanager
def running_cluster(
    workdir: Path, nodes: Sequence[FakeNode] = DEFAULT_NODES
) -> Iterator[KubeCluster]:
    """A started cluster with ``nodes`` Ready (by default 3 CPU nodes of 16 cpu / 64Gi and one
    GPU node with 4 ``nvidia.com/gpu``, labelled ``kb-platform/node-group: gpu`` and tainted
    ``nvidia.com/gpu=present:NoSchedule``); every process is stopped on exit."""
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = KubeCluster(workdir, nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def bind_shared_claim(
    cluster: KubeCluster, namespace: str, claim: str, host_path: str, size: str = "100Gi"
) -> None:
    """A ReadWriteMany claim ``claim`` in ``namespace``, bound to a hostPath PersistentVolume of
    ``host_path`` (named ``<namespace>-<claim>``): the training jobs' shared volume."""
    volume = f"{namespace}-{claim}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": host_path},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": size}},
            },
        }
    )

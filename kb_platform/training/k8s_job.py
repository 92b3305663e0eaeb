"""A multi-node FSDP training job on Kubernetes: an Indexed Job of N pods (one per node, G GPUs
each) and the headless Service that gives pod 0 a stable name for torchrun's c10d rendezvous.

Why an Indexed Job and not a Kubeflow ``PyTorchJob`` or a ``JobSet``: it is built into every
cluster (no operator to install and upgrade), the index is the node's identity
(``JOB_COMPLETION_INDEX``), and with c10d rendezvous torchrun needs only one reachable host;
elastic restarts (``--max-restarts``) and resuming from the last distributed checkpoint cover
a failed pod. Checkpoints and the export go to a ReadWriteMany volume (FSx for Lustre or EFS on
EKS) that every node mounts at the same path, as the trainer writes plain files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RENDEZVOUS_PORT = 29400
GPU = "nvidia.com/gpu"
EFA = "vpc.amazonaws.com/efa"
CHECKPOINT_MOUNT = "/shared"

# NCCL on EKS: EFA through libfabric where the nodes have it (p4d/p5), sockets otherwise; the
# loopback and container bridges are never the interconnect.
NCCL_ENV = {
    "NCCL_SOCKET_IFNAME": "^lo,docker0",
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_BLOCKING_WAIT": "0",
}
EFA_ENV = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "NCCL_PROTO": "simple"}


@dataclass(frozen=True)
class TrainingJob:
    name: str
    image: str
    config_path: str  # the run's TrainConfig JSON, on the shared volume
    nodes: int
    gpus_per_node: int
    namespace: str = "kb-platform"
    checkpoint_claim: str = "kb-platform-training"  # a ReadWriteMany PersistentVolumeClaim
    efa_interfaces: int = 0  # EFA devices per pod (0: no EFA, NCCL over sockets)
    cpu: str = "32"
    memory: str = "256Gi"
    shm: str = "64Gi"  # NCCL and the data loader's shared memory
    node_selector: dict[str, str] = field(
        default_factory=lambda: {"kb-platform/node-group": "gpu-training"}
    )
    max_restarts: int = 3
    service_account: str = "kb-platform-training"
    mount_path: str = CHECKPOINT_MOUNT  # where every pod sees the shared volume
    rendezvous_port: int = RENDEZVOUS_PORT
    env: dict[str, str] = field(default_factory=dict)  # e.g. the Dagster Pipes bootstrap
    extra_labels: dict[str, str] = field(default_factory=dict)  # e.g. the Dagster run's id

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError("a training job needs at least one node and one GPU per node")
        if not self.name.replace("-", "").isalnum() or len(self.name) > 40:
            raise ValueError(f"{self.name!r}: lowercase letters, digits and '-', 40 at most")

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "kb-platform",
            "app.kubernetes.io/component": "training",
            "kb-platform/training-job": self.name,
            **self.extra_labels,
        }

    @property
    def rendezvous_host(self) -> str:
        return f"{self.name}-0.{self.name}.{self.namespace}.svc"

    def torchrun(self) -> list[str]:
        return [
            "torchrun",
            f"--nnodes={self.nodes}",
            f"--nproc-per-node={self.gpus_per_node}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.rendezvous_host}:{self.rendezvous_port}",
            f"--rdzv-id={self.name}",
            f"--max-restarts={self.max_restarts}",
            "-m",
            "kb_platform.training.train",
            "--config",
            self.config_path,
        ]

    def service(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {
                "clusterIP": "None",
                # pod 0 must be resolvable before it is ready: the others wait on it
                "publishNotReadyAddresses": True,
                "selector": {"kb-platform/training-job": self.name},
                "ports": [{"name": "rendezvous", "port": self.rendezvous_port}],
            },
        }

    def job(self) -> dict[str, Any]:
        limits: dict[str, str] = {GPU: str(self.gpus_per_node), "memory": self.memory}
        if self.efa_interfaces:
            limits[EFA] = str(self.efa_interfaces)
        env = {**NCCL_ENV, **(EFA_ENV if self.efa_interfaces else {}), **self.env}
        container = {
            "name": "trainer",
            "image": self.image,
            "command": self.torchrun(),
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "ports": [{"name": "rendezvous", "containerPort": self.rendezvous_port}],
            "resources": {"requests": {**limits, "cpu": self.cpu}, "limits": limits},
            "volumeMounts": [
                {"name": "shared", "mountPath": self.mount_path},
                {"name": "shm", "mountPath": "/dev/shm"},  # nosec B108 # a pod's mount path
            ],
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "runAsUser": 10001,
            },
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {
                "completionMode": "Indexed",
                "completions": self.nodes,
                "parallelism": self.nodes,
                # a node lost: its pod is replaced and torchrun's rendezvous takes it back in
                "backoffLimit": self.nodes * self.max_restarts,
                "ttlSecondsAfterFinished": 86400,
                "template": {
                    "metadata": {"labels": self.labels},
                    "spec": {
                        "subdomain": self.name,  # <job>-<index>.<service>: pod 0's name
                        "restartPolicy": "OnFailure",
                        "serviceAccountName": self.service_account,
                        "nodeSelector": dict(self.node_selector),
                        "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "shared",
                                "persistentVolumeClaim": {"claimName": self.checkpoint_claim},
                            },
                            {
                                "name": "shm",
                                "emptyDir": {"medium": "Memory", "sizeLimit": self.shm},
                            },
                        ],
                    },
                },
            },
        }

    def service_account_manifest(self) -> dict[str, Any]:
        """The pods need no Kubernetes API: no token mounted (IRSA, where the run reads S3,
        is an annotation added here by the operator)."""
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": self.service_account,
                "namespace": self.namespace,
                "labels": {k: v for k, v in self.labels.items() if k.startswith("app.")},
            },
            "automountServiceAccountToken": False,
        }

    def manifests(self) -> list[dict[str, Any]]:
        return [self.service_account_manifest(), self.service(), self.job()]

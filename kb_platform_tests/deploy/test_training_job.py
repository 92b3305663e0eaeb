"""The multi-node training job (kb_platform/training/k8s_job.py): its objects, the committed
example kept equal to what `kb-platform train manifest` makes, kubeconform -strict, and the Job
run on the throwaway API server: every node's pod placed on a GPU node with its GPUs, the Job
complete; a job that asks for more GPUs than a node has never places its pods."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kb_platform.config import REPO_ROOT
from kb_platform.training.k8s_job import RENDEZVOUS_PORT, TrainingJob
from kb_platform_tests.deploy.chart import kubeconform
from kb_platform_tests.deploy.kube_cluster import (
    GPU_RESOURCE,
    KubeCluster,
    bind_shared_claim,
    wait_for,
)

EXAMPLE = REPO_ROOT / "deploy" / "cluster" / "training" / "llama-3-70b-4x8.yaml"


def _command_of(example: Path) -> list[str]:
    """The `kb-platform train manifest ...` command in the example's header comment."""
    lines = [line[1:].strip() for line in example.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("kb-platform train"))
    return " ".join(line.rstrip("\\").strip() for line in lines[start:]).split()[1:]


def test_the_example_is_what_the_command_makes() -> None:
    made = subprocess.run(
        [sys.executable, "-m", "kb_platform.cli", *_command_of(EXAMPLE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = "\n".join(
        line for line in EXAMPLE.read_text().splitlines() if not line.startswith("#")
    )
    assert committed.strip() == made.strip(), "regenerate with the command in the header"


def test_the_job_ranks_rendezvous_and_nccl_settings() -> None:
    job = TrainingJob("lm", "img:1", "/shared/c.json", nodes=4, gpus_per_node=8, efa_interfaces=32)
    service, spec = job.service(), job.job()["spec"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (4, 4, "Indexed")
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    container = pod["containers"][0]
    assert "--nnodes=4" in container["command"] and "--nproc-per-node=8" in container["command"]
    assert f"--rdzv-endpoint=lm-0.lm.kb-platform.svc:{RENDEZVOUS_PORT}" in container["command"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FI_PROVIDER"] == "efa"
    assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "32"
    plain = TrainingJob("lm", "img:1", "/c.json", nodes=2, gpus_per_node=8).job()
    plain_env = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FI_PROVIDER" not in plain_env and "NCCL_SOCKET_IFNAME" in plain_env
    for bad in ({"nodes": 0}, {"gpus_per_node": 0}, {"name": "Not_A_Name"}):
        with pytest.raises(ValueError):
            TrainingJob(**{"name": "lm", "image": "i", "config_path": "c", "nodes": 1,
                           "gpus_per_node": 1, **bad})  # fmt: skip


@pytest.mark.kube
def test_kubeconform_accepts_the_example_and_rejects_a_broken_job(tmp_path: Path) -> None:
    result = kubeconform(EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    objects = list(yaml.safe_load_all(EXAMPLE.read_text()))
    objects[2]["spec"]["completions"] = "four"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(objects))
    rejected = kubeconform(broken)
    assert rejected.returncode != 0 and "completions" in rejected.stdout


def _pods(cluster: KubeCluster, namespace: str, job: str) -> list[dict[str, Any]]:
    selector = f"kb-platform/training-job={job}"
    return cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]


@pytest.mark.kube
def test_the_job_runs_on_gpu_nodes_and_completes(kube_cluster: KubeCluster) -> None:
    namespace = "kb-training-test"
    kube_cluster.kubectl("create", "namespace", namespace)
    bind_shared_claim(kube_cluster, namespace, "kb-platform-training", "/var/lib/kb-test-training")
    # the kwok GPU node has 4 GPUs (the chart's encoder may hold one): 2 x 1 fit, 1 x 8 does not
    on_gpus: dict[str, Any] = {
        "namespace": namespace,
        "node_selector": {"kb-platform/node-group": "gpu"},
        "cpu": "2",
        "memory": "4Gi",
    }
    fits = TrainingJob("lm-2x1", "img:1", "/shared/c.json", nodes=2, gpus_per_node=1, **on_gpus)
    too_big = TrainingJob("lm-1x8", "img:1", "/shared/c.json", nodes=1, gpus_per_node=8, **on_gpus)
    for job in (fits, too_big):
        kube_cluster.apply(yaml.safe_dump_all(job.manifests()))

    def complete() -> bool:
        status = kube_cluster.get_json("job", fits.name, "-n", namespace)["status"]
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in status.get("conditions", []))  # fmt: skip

    try:
        wait_for("the 2-node job to complete", complete, timeout_s=90)
    except AssertionError:
        state = kube_cluster.kubectl("get", "job,pods,events", "-n", namespace, "-o", "wide")
        raise AssertionError(state.stdout) from None
    pods = _pods(kube_cluster, namespace, fits.name)
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                     for p in pods)  # fmt: skip
    assert indexes == ["0", "1"]
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-gpu")
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits[GPU_RESOURCE] == "1"
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert pod["spec"]["hostname"] == f"{fits.name}-{index}"

    pending = wait_for(
        "the 8-GPU pod to be refused", lambda: _pods(kube_cluster, namespace, too_big.name)
    )
    time.sleep(3)
    pod = _pods(kube_cluster, namespace, too_big.name)[0]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName"), pending
    unschedulable = [c for c in pod["status"].get("conditions", [])
                     if c["type"] == "PodScheduled" and c["status"] == "False"]  # fmt: skip
    assert unschedulable and "nvidia.com/gpu" in unschedulable[0]["message"]

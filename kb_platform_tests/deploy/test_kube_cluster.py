"""The throwaway control plane (kube_cluster.py) behaves as a cluster: the controllers roll out a
Deployment, the scheduler places pods on kwok's fake nodes by resources and taints, the API
server validates what a client-side check lets through, and RBAC decides what a ServiceAccount
may do."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kb_platform_tests.deploy.kube_cluster import (
    DEFAULT_NODES,
    GPU_RESOURCE,
    NODE_GROUP_LABEL,
    POD_CIDR,
    KubeCluster,
)

pytestmark = pytest.mark.kube

# An upper bound for kubectl wait, never a measured expectation.
WAIT = "--timeout=120s"
CPU_NODES = {node.name for node in DEFAULT_NODES if node.labels[NODE_GROUP_LABEL] == "cpu"}
GPU_NODES = {node.name for node in DEFAULT_NODES if node.labels[NODE_GROUP_LABEL] == "gpu"}


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")


def container(**resources: dict[str, str]) -> dict[str, Any]:
    return {"name": "app", "image": "registry.invalid/kb-platform/app:1", "resources": resources}


def deployment(
    name: str, replicas: int, selector: dict[str, str], labels: dict[str, str]
) -> dict[str, Any]:
    requests = {"cpu": "500m", "memory": "256Mi"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container(requests=requests, limits=requests)]},
            },
        },
    }


def pod(name: str, **spec: Any) -> dict[str, Any]:
    gpu = {GPU_RESOURCE: "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container(requests=gpu, limits=gpu)], **spec},
    }


def test_deployment_pods_run_on_fake_cpu_nodes(kube_cluster: KubeCluster, namespace: str) -> None:
    app = {"app": "web"}
    kube_cluster.apply(deployment("web", 2, app, app), "-n", namespace)
    kube_cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, WAIT)

    status = kube_cluster.get_json("deployment", "web", "-n", namespace)["status"]
    assert status["readyReplicas"] == 2
    pods = kube_cluster.get_json("pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    for item in pods:
        assert item["status"]["phase"] == "Running"
        # untolerated, the GPU node's taint keeps them off it
        assert item["spec"]["nodeName"] in CPU_NODES
        # kwok's pod addresses: a documentation range, no private one
        assert ipaddress.ip_address(item["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)


def test_gpu_pod_runs_only_with_the_toleration(kube_cluster: KubeCluster, namespace: str) -> None:
    toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    kube_cluster.apply(pod("untolerated"), "-n", namespace)
    kube_cluster.apply(
        pod("tolerated", tolerations=[toleration], nodeSelector={NODE_GROUP_LABEL: "gpu"}),
        "-n",
        namespace,
    )

    kube_cluster.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Running", "pod/tolerated", "-n", namespace, WAIT
    )
    tolerated = kube_cluster.get_json("pod", "tolerated", "-n", namespace)
    assert tolerated["spec"]["nodeName"] in GPU_NODES

    # The scheduler has tried and given up: only the tainted node has the GPUs.
    kube_cluster.kubectl(
        "wait", "--for=condition=PodScheduled=false", "pod/untolerated", "-n", namespace, WAIT
    )
    untolerated = kube_cluster.get_json("pod", "untolerated", "-n", namespace)
    assert untolerated["status"]["phase"] == "Pending"
    assert "nodeName" not in untolerated["spec"]
    (scheduled,) = [c for c in untolerated["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled["reason"] == "Unschedulable"
    assert "untolerated taint" in scheduled["message"], scheduled["message"]
    assert f"Insufficient {GPU_RESOURCE}" in scheduled["message"], scheduled["message"]


def test_server_side_dry_run_rejects_a_selector_not_matching_the_template(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    good = deployment("matching", 1, {"app": "a"}, {"app": "a"})
    bad = deployment("mismatched", 1, {"app": "a"}, {"app": "b"})
    dry_run = ("apply", "--dry-run=server", "-n", namespace, "-f", "-")

    accepted = kube_cluster.kubectl(*dry_run, input=json.dumps(good))
    assert "server dry run" in accepted.stdout

    refused = kube_cluster.kubectl(*dry_run, input=json.dumps(bad), check=False)
    assert refused.returncode != 0
    assert "selector" in refused.stderr
    assert "does not match template" in refused.stderr, refused.stderr
    # a dry run creates nothing, accepted or not
    listed = kube_cluster.get_json("deployments", "-n", namespace)["items"]
    assert listed == []


def test_rbac_lets_a_service_account_create_jobs_but_not_read_secrets(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "job-runner", "-n", namespace)
    kube_cluster.kubectl(
        "create", "role", "job-creator", "--verb=create", "--resource=jobs.batch", "-n", namespace
    )
    kube_cluster.kubectl(
        "create",
        "rolebinding",
        "job-runner",
        "--role=job-creator",
        f"--serviceaccount={namespace}:job-runner",
        "-n",
        namespace,
    )
    as_runner = (f"--as=system:serviceaccount:{namespace}:job-runner", "-n", namespace)

    allowed = kube_cluster.kubectl("auth", "can-i", "create", "jobs", *as_runner, check=False)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes")
    denied = kube_cluster.kubectl("auth", "can-i", "get", "secrets", *as_runner, check=False)
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")

    # The same answers when the requests are made, not only asked about.
    created = kube_cluster.kubectl(
        "create", "job", "once", "--image=registry.invalid/job:1", "--dry-run=server", *as_runner
    )
    assert "server dry run" in created.stdout
    forbidden = kube_cluster.kubectl("get", "secrets", *as_runner, check=False)
    assert forbidden.returncode != 0
    assert "Forbidden" in forbidden.stderr, forbidden.stderr

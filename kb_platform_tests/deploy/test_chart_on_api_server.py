"""The kb-platform chart installed by `helm install` on a real kube-apiserver (etcd, the
controller manager, the scheduler, kwok's fake nodes): every Deployment's pods scheduled with
their requests (the GPU encoder on the GPU node), the autoscalers and budgets accepted and bound
to their targets, the quota counting the pods, least privilege checked with `kubectl auth
can-i`, and the model store's snapshot job making and pruning VolumeSnapshots."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kb_platform.config import REPO_ROOT
from kb_platform_tests.deploy.chart import CHART, NAMESPACE, crd_folder, profile_values_file
from kb_platform_tests.deploy.kube_cluster import KubeCluster, tool_path, wait_for

pytestmark = pytest.mark.kube

CLAIM = "kb-platform-model-store"
SECRETS = {
    "kb-elasticsearch": {"KB_ELASTICSEARCH_API_KEY": "es-key"},
    "kb-kafka": {"KB_KAFKA_SASL_USERNAME": "kb", "KB_KAFKA_SASL_PASSWORD": "pw"},
    "kb-rag-api-keys": {"keys.json": "[]"},
    "kb-encoder-token": {"token": "t"},
    "kb-rag-metrics-key": {"api-key": "k"},
    "kb-dagster-postgresql": {"postgresql-password": "pw"},
}


@pytest.fixture(scope="module")
def installed(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """The production profile installed into its namespace, with the CRDs its objects use, the
    Secrets it names (made beforehand, as External Secrets would) and a volume for its claim."""
    cluster, folder = kube_cluster, tmp_path_factory.mktemp("install")
    cluster.kubectl("apply", "--server-side", "-f", str(crd_folder()))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cluster.kubectl("create", "namespace", NAMESPACE)
    for name, data in SECRETS.items():
        literals = [f"--from-literal={k}={v}" for k, v in data.items()]
        cluster.kubectl("create", "secret", "generic", name, "-n", NAMESPACE, *literals)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "model-store-volume"},
            "spec": {
                "capacity": {"storage": "50Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "kb-gp3",
                "hostPath": {"path": "/var/lib/kb-test-model-store"},
            },
        }
    )
    values = profile_values_file("production", folder)
    result = subprocess.run(
        [
            str(tool_path("helm")),
            "install",
            "kb",
            str(CHART),
            "--namespace",
            NAMESPACE,
            "-f",
            str(values),
            "--set",
            "secrets.externalSecrets.enabled=false",  # the Secrets exist already
            "--wait",
            "--timeout",
            "5m",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "HELM_CACHE_HOME": str(folder / "helm"),
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    yield cluster


def _get(cluster: KubeCluster, *args: str) -> list[dict[str, Any]]:
    return cluster.get_json(*args, "-n", NAMESPACE)["items"]


def test_every_deployment_runs_on_the_fake_nodes_with_its_requests(installed: KubeCluster) -> None:
    deployments = {d["metadata"]["name"]: d for d in _get(installed, "deployments")}
    assert set(deployments) == {"kb-platform-rag", "kb-platform-encoder", "kb-platform-exporter"}

    def all_available() -> bool:
        found = _get(installed, "deployments")
        return all(
            d["status"].get("availableReplicas", 0) >= 1
            and d["status"].get("availableReplicas") == d["spec"]["replicas"]
            for d in found
        )

    wait_for("every Deployment available", all_available)
    pods = [p for p in _get(installed, "pods") if p["status"]["phase"] == "Running"]
    components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods}
    assert components == {"rag", "encoder", "exporter"}
    nodes = {n["metadata"]["name"]: n for n in installed.get_json("nodes")["items"]}
    for pod in pods:
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        node = nodes[pod["spec"]["nodeName"]]
        on_gpu = node["metadata"]["labels"].get("kb-platform/node-group") == "gpu"
        assert on_gpu == (component == "encoder"), (component, node["metadata"]["name"])
        requests = pod["spec"]["containers"][0]["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests)


def test_autoscalers_scale_their_deployments_to_the_minimum(installed: KubeCluster) -> None:
    """The HPA controller found its targets: it raised each Deployment to minReplicas (with no
    metrics API here, it can do no more than that)."""
    hpas = {h["metadata"]["name"]: h for h in _get(installed, "hpa")}
    assert set(hpas) == {"kb-platform-rag", "kb-platform-encoder"}

    def at_minimum() -> bool:
        found = {d["metadata"]["name"]: d for d in _get(installed, "deployments")}
        return all(
            found[name]["spec"]["replicas"] >= hpa["spec"]["minReplicas"]
            for name, hpa in hpas.items()
        )

    wait_for("the autoscalers to apply their minimum", at_minimum)
    rag = installed.get_json("deployment", "kb-platform-rag", "-n", NAMESPACE)
    assert rag["spec"]["replicas"] == hpas["kb-platform-rag"]["spec"]["minReplicas"] == 3


def test_disruption_budgets_cover_the_running_pods(installed: KubeCluster) -> None:
    def counted() -> dict[str, Any] | None:
        budgets = {b["metadata"]["name"]: b["status"] for b in _get(installed, "pdb")}
        ok = all(s.get("expectedPods", 0) >= 2 for s in budgets.values())
        return budgets if ok else None

    budgets = wait_for("the budgets to count their pods", counted)
    assert budgets["kb-platform-rag"]["desiredHealthy"] == 2  # production: minAvailable 2


def test_the_quota_counts_the_namespace_s_requests(installed: KubeCluster) -> None:
    encoders = installed.get_json("deployment", "kb-platform-encoder", "-n", NAMESPACE)
    replicas = encoders["spec"]["replicas"]

    def used() -> dict[str, str] | None:
        # the quota controller counts pods as they are made: wait for all the encoder's
        quota = installed.get_json("resourcequota", "kb-platform", "-n", NAMESPACE)
        found = quota.get("status", {}).get("used", {})
        return found if found.get("requests.nvidia.com/gpu") == str(replicas) else None

    counted = wait_for("the quota to count every encoder's GPU", used)
    assert int(counted["requests.nvidia.com/gpu"]) == replicas


@pytest.mark.parametrize(
    ("account", "verb", "resource", "namespace", "allowed"),
    [
        ("kb-platform-dagster", "create", "jobs.batch", NAMESPACE, True),
        ("kb-platform-dagster", "delete", "jobs.batch", NAMESPACE, True),
        ("kb-platform-dagster", "get", "pods/log", NAMESPACE, True),
        ("kb-platform-dagster", "create", "pods", NAMESPACE, False),
        ("kb-platform-dagster", "get", "secrets", NAMESPACE, False),
        ("kb-platform-dagster", "get", "secrets", "kube-system", False),
        ("kb-platform-dagster", "create", "jobs.batch", "default", False),
        ("kb-platform-dagster", "create", "deployments.apps", NAMESPACE, False),
        ("kb-platform-run", "create", "jobs.batch", NAMESPACE, False),
        ("kb-platform-rag", "list", "pods", NAMESPACE, False),
        (
            "kb-platform-snapshots",
            "create",
            "volumesnapshots.snapshot.storage.k8s.io",
            NAMESPACE,
            True,
        ),
        ("kb-platform-snapshots", "delete", "persistentvolumeclaims", NAMESPACE, False),
    ],
)
def test_accounts_may_do_what_they_need_and_nothing_more(
    installed: KubeCluster, account: str, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    result = installed.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        namespace,
        f"--as=system:serviceaccount:{NAMESPACE}:{account}",
        check=False,
    )
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


def test_the_snapshot_job_takes_and_prunes_model_store_snapshots(installed: KubeCluster) -> None:
    """`kb-platform model-store snapshot` (the CronJob's command) against the API server: each
    run requests a snapshot of the claim; once three are ready (no CSI driver here: the test
    marks them ready, as the snapshot controller would), keeping two deletes the oldest."""

    def snapshot() -> str:
        result = subprocess.run(
            [
                str(REPO_ROOT / ".venv/bin/kb-platform"),
                "model-store",
                "snapshot",
                f"--claim={CLAIM}",
                "--class=kb-ebs-snapshots",
                "--keep=2",
                f"--namespace={NAMESPACE}",
                f"--kubeconfig={installed.kubeconfig}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    def names() -> list[str]:
        return sorted(s["metadata"]["name"] for s in _get(installed, "volumesnapshots"))

    for _ in range(3):
        assert "0 old snapshot(s) deleted" in snapshot()  # none ready yet: nothing pruned
        time.sleep(1.1)  # names carry the second
    taken = names()
    assert len(taken) == 3 and all(n.startswith(f"{CLAIM}-") for n in taken)
    for name in taken:
        installed.kubectl(
            "patch",
            "volumesnapshot",
            name,
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"readyToUse": true}}',
        )
    out = snapshot()  # a fourth, not ready: the three ready ones are counted, one goes
    assert "1 old snapshot(s) deleted" in out, out
    left = names()
    assert taken[0] not in left and set(taken[1:]) <= set(left) and len(left) == 3


def test_a_selector_that_misses_its_pods_is_refused_by_the_api_server(
    installed: KubeCluster, tmp_path: Path
) -> None:
    """The validator kubeconform cannot be: the API server refuses what the schemas allow."""
    result = installed.kubectl(
        "create",
        "deployment",
        "x",
        "--image=nothing",
        "-n",
        NAMESPACE,
        "--dry-run=client",
        "-o",
        "json",
    )
    broken = json.loads(result.stdout)
    broken["spec"]["selector"]["matchLabels"] = {"app": "something-else"}
    refused = installed.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(broken), check=False
    )
    assert refused.returncode != 0 and "selector" in refused.stderr

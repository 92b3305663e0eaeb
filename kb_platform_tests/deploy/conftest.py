from __future__ import annotations

from collections.abc import Iterator

import pytest

from kb_platform_tests.deploy.chart import crd_folder
from kb_platform_tests.deploy.kube_cluster import KubeCluster, running_cluster


@pytest.fixture(scope="package")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """One control plane with kwok's fake nodes for the deploy tests (its binaries: bash
    deploy/cluster/tools.sh install); logs under the fixture's temporary folder, logs/."""
    with running_cluster(tmp_path_factory.mktemp("kube-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="package")
def cluster_with_crds(kube_cluster: KubeCluster) -> KubeCluster:
    """That cluster with every CRD of deploy/cluster/crds.versions established (Argo
    CD's and Argo Rollouts' too; server-side apply: the ApplicationSet CRD is too big for the
    last-applied annotation of a client-side one)."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(crd_folder()))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return kube_cluster

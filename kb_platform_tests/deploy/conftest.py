from __future__ import annotations

from collections.abc import Iterator

import pytest

from kb_platform_tests.deploy.kube_cluster import KubeCluster, running_cluster


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """One control plane with kwok's fake nodes for the session (its binaries: bash
    deploy/cluster/tools.sh install); logs under the fixture's temporary folder, logs/."""
    with running_cluster(tmp_path_factory.mktemp("kube-cluster")) as cluster:
        yield cluster

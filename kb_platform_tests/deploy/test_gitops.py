"""GitOps with Argo CD (deploy/cluster/gitops): the AppProjects, the root Application and the
environments' Applications validated strictly against Argo CD's CRDs and accepted by a real API
server (each validator shown rejecting a broken object); staging syncing itself and production
waiting for a person; every source, chart and values file an Application names present in the
repository; the image-tag files in their fixed format and taking effect; the projects allowing
what the chart renders; the chart's sync waves putting policy, secrets and settings before the
workloads and the Rollouts after them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kb_platform.config import REPO_ROOT
from kb_platform_tests.deploy.chart import (
    CHART,
    NAMESPACE,
    PROFILES,
    crd_schemas,
    helm,
    kubeconform,
    objects,
    of_kind,
    profile_values_file,
    render_text,
)
from kb_platform_tests.deploy.kube_cluster import KubeCluster

pytestmark = pytest.mark.kube

GITOPS = REPO_ROOT / "deploy" / "cluster" / "gitops"
MANIFESTS = sorted(p for p in GITOPS.rglob("*.yaml") if "environments" not in p.parts)
ENVIRONMENTS = {"kb-platform-staging": "staging", "kb-platform-production": "production"}
WAVE = "argocd.argoproj.io/sync-wave"
# The fixed format .github/workflows/release.yml and promote.yml write.
IMAGE_FILE = (
    "# The image tag this environment runs: .github/workflows/release.yml writes staging's,"
    " promotion (promote.yml) copies it to production.\n"
    'kb-platform:\n  image:\n    tag: "{tag}"\n'
)


def _all() -> list[dict[str, Any]]:
    return [o for path in MANIFESTS for o in yaml.safe_load_all(path.read_text()) if o]


def _applications() -> dict[str, dict[str, Any]]:
    return of_kind(_all(), "Application")


def _projects() -> dict[str, dict[str, Any]]:
    return of_kind(_all(), "AppProject")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gitops")


def test_the_gitops_objects_are_valid_against_argo_cds_strict_schemas(folder: Path) -> None:
    result = kubeconform(*MANIFESTS, crd_schema_dir=crd_schemas(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_all())} resources found" in result.stdout and "Skipped: 0" in result.stdout
    assert set(_applications()) == {"kb-platform-root", *ENVIRONMENTS}
    assert set(_projects()) == {"kb-platform", "kb-platform-gitops"}


def _unknown_field(app: dict) -> None:
    app["spec"]["syncPolicy"]["automatic"] = app["spec"]["syncPolicy"].pop("automated")


def _no_destination(app: dict) -> None:
    del app["spec"]["destination"]


def _values_as_text(app: dict) -> None:
    app["spec"]["source"]["helm"]["valueFiles"] = "values-staging.yaml"


BROKEN = [
    (_unknown_field, "automatic"),
    (_no_destination, "destination"),
    (_values_as_text, "valueFiles"),
]


def _broken(change: Any) -> dict[str, Any]:
    app = json.loads(json.dumps(_applications()["kb-platform-staging"]))
    change(app)
    return app


@pytest.mark.parametrize(("change", "field"), BROKEN)
def test_kubeconform_rejects_a_broken_application(change: Any, field: str, folder: Path) -> None:
    path = folder / f"broken-{field}.yaml"
    path.write_text(yaml.safe_dump(_broken(change)))
    result = kubeconform(path, crd_schema_dir=crd_schemas(folder))
    assert result.returncode != 0 and "Invalid: 1" in result.stdout, result.stdout
    assert field in result.stdout


def test_staging_syncs_itself_and_production_waits_for_a_person() -> None:
    apps = _applications()
    staging = apps["kb-platform-staging"]["spec"]["syncPolicy"]
    assert staging["automated"] == {"prune": True, "selfHeal": True}
    production = apps["kb-platform-production"]
    assert "automated" not in production["spec"].get("syncPolicy", {})
    # deleting production's Application object must not delete production
    assert "finalizers" not in production["metadata"]
    root = apps["kb-platform-root"]["spec"]
    assert root["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    # the root only manages the environments' Applications
    assert root["source"]["path"] == "deploy/cluster/gitops/apps"
    in_apps = {p.stem for p in (GITOPS / "apps").glob("*.yaml")}
    assert in_apps == set(ENVIRONMENTS.values())


def _resolve(chart_dir: Path, value_file: str) -> Path:
    """Argo CD's resolution of a Helm value file (util/io/path/resolved.go): relative to the
    chart's folder, or (a leading /) to the repository root; outside the repository is refused."""
    base = REPO_ROOT if value_file.startswith("/") else chart_dir
    path = (base / value_file.lstrip("/")).resolve()
    assert path.is_relative_to(REPO_ROOT.resolve()), f"{value_file} leaves the repository"
    return path


def test_every_application_names_sources_that_exist_and_its_project_allows() -> None:
    projects = _projects()
    for name, app in _applications().items():
        spec = app["spec"]
        project = projects[spec["project"]]["spec"]
        source = spec["source"]
        assert source["repoURL"] in project["sourceRepos"], name
        assert source["targetRevision"] == "main", name
        destination = {k: spec["destination"][k] for k in ("name", "namespace")}
        assert destination in project["destinations"], name
        path = REPO_ROOT / source["path"]
        assert path.is_dir(), (name, source["path"])
        if name not in ENVIRONMENTS:
            continue
        environment = ENVIRONMENTS[name]
        assert (path / "Chart.yaml").is_file() and path.name == "kb-platform-stack"
        helm = source["helm"]
        assert helm["releaseName"] == "kb"  # the names `helm install kb` gives
        files = [_resolve(path, f) for f in helm["valueFiles"]]
        assert all(f.is_file() for f in files), (name, helm["valueFiles"])
        # the profile, then the image tag (the later file wins)
        assert files == [
            (path / f"values-{environment}.yaml").resolve(),
            (GITOPS / "environments" / environment / "images.yaml").resolve(),
        ]
        assert name.endswith(environment) and spec["destination"]["namespace"] == "kb"


def test_a_value_file_outside_the_repository_is_refused() -> None:
    with pytest.raises(AssertionError, match="leaves the repository"):
        _resolve(REPO_ROOT / "deploy" / "helm" / "kb-platform-stack", "../../../../etc/passwd")


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_the_image_tag_files_keep_the_release_workflow_s_format(environment: str) -> None:
    text = (GITOPS / "environments" / environment / "images.yaml").read_text()
    tag = yaml.safe_load(text)["kb-platform"]["image"]["tag"]
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag), tag  # an OCI tag
    assert text == IMAGE_FILE.format(tag=tag)
    # the key is the kb-platform chart's own (a dependency of the stack chart: kb-platform:)
    assert "tag" in yaml.safe_load((CHART / "values.yaml").read_text())["image"]


def test_the_image_tag_file_sets_every_kb_platform_image(folder: Path) -> None:
    """The tag file's kb-platform part over the production profile: every image of the chart
    (services, exporter, snapshot job) carries the tag; without it, the chart's appVersion."""
    tag_file = folder / "images.yaml"
    tag_file.write_text(
        yaml.safe_dump(yaml.safe_load(IMAGE_FILE.format(tag="9.8.7"))["kb-platform"])
    )
    profile = profile_values_file("production", folder, rollouts=True)
    with_tag = objects(_render(profile, tag_file))
    without = objects(_render(profile))
    for objs, expected in ((with_tag, ":9.8.7"), (without, ":0.1.0")):
        images = _images(objs)
        assert images and all(i.endswith(expected) for i in images), images


def _render(*values: Path) -> str:
    flags = [arg for v in values for arg in ("-f", str(v))]
    return helm("template", "kb", str(CHART), "--namespace", NAMESPACE, *flags).stdout


def _images(objs: list[dict[str, Any]]) -> list[str]:
    found = []
    for o in objs:
        spec = o.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template", {})
        pod = template.get("spec", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            found.append(c["image"])
    return found


def _kinds(folder: Path) -> set[tuple[str, str]]:
    """(API group, kind) of everything the chart renders, any profile, rollouts on and off."""
    found = set()
    for profile in PROFILES:
        for rollouts, strategy in ((False, None), (True, "canary"), (True, "blueGreen")):
            values = profile_values_file(profile, folder, rollouts=rollouts, strategy=strategy)
            for o in objects(render_text(values)):
                group = o["apiVersion"].rpartition("/")[0]
                found.add((group, o["kind"]))
    return found


def _cluster_scoped(cluster: KubeCluster) -> set[tuple[str, str]]:
    """(group, kind) of every cluster-scoped resource the API server serves (CRDs included)."""
    out = cluster.kubectl("api-resources", "--namespaced=false", "--no-headers").stdout
    scoped = set()
    for line in out.splitlines():
        parts = line.split()
        scoped.add((parts[-3].rpartition("/")[0], parts[-1]))
    return scoped


def test_the_project_allows_exactly_the_kinds_the_chart_renders(
    cluster_with_crds: KubeCluster, folder: Path
) -> None:
    """Sorted by the API server's own knowledge of what is cluster-scoped: each kind the chart
    renders is in the project's list for its scope, and the project allows no kind beyond them
    but the Namespace (CreateNamespace) and the Dagster chart's migration Job."""
    project = _projects()["kb-platform"]["spec"]
    allowed_cluster = {(k["group"], k["kind"]) for k in project["clusterResourceWhitelist"]}
    allowed_namespaced = {(k["group"], k["kind"]) for k in project["namespaceResourceWhitelist"]}
    scoped = _cluster_scoped(cluster_with_crds)
    rendered = _kinds(folder)
    cluster_kinds = {k for k in rendered if k in scoped}
    assert cluster_kinds == allowed_cluster - {("", "Namespace")}
    assert rendered - cluster_kinds == allowed_namespaced - {("batch", "Job")}
    assert ("", "Secret") not in allowed_namespaced  # Secrets come from External Secrets
    root = _projects()["kb-platform-gitops"]["spec"]
    assert root["namespaceResourceWhitelist"] == [{"group": "argoproj.io", "kind": "Application"}]
    assert root["clusterResourceWhitelist"] == []


def _wave(o: dict[str, Any]) -> int:
    return int((o["metadata"].get("annotations") or {}).get(WAVE, "0"))


@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_sync_waves_put_policy_secrets_and_settings_first_and_rollouts_last(
    strategy: str, folder: Path
) -> None:
    """Argo CD applies wave by wave and waits for each to be healthy; within a wave, custom
    kinds (ExternalSecret, Rollout) come after the built-in ones: so the Secrets' ExternalSecrets,
    the quota and limits, and the settings every pod reads get waves before the workloads; the
    AnalysisTemplates, Rollouts and their autoscalers come after; the model store's claim binds
    only once a pod uses it (WaitForFirstConsumer), so it must not be waited for before them."""
    values = profile_values_file("production", folder, rollouts=True, strategy=strategy)
    objs = objects(render_text(values))
    assert not of_kind(objs, "CustomResourceDefinition")  # CRDs come with their controllers
    kinds: dict[str, list[int]] = {}
    for o in objs:
        kinds.setdefault(o["kind"], []).append(_wave(o))
    settings = of_kind(objs, "ConfigMap")["kb-platform-settings"]
    first = [
        *kinds["ExternalSecret"],
        *kinds["ResourceQuota"],
        *kinds["LimitRange"],
        _wave(settings),
    ]
    workloads = kinds["Deployment"] + kinds["CronJob"]
    assert max(first) < min(workloads)
    assert set(workloads) == {0}
    assert min(kinds["PersistentVolumeClaim"]) >= max(workloads)
    assert max(workloads) < min(kinds["AnalysisTemplate"])
    assert max(kinds["AnalysisTemplate"]) < min(kinds["Rollout"])
    assert max(kinds["Rollout"]) < min(kinds["HorizontalPodAutoscaler"])
    if strategy == "blueGreen":  # the preview Services with their Rollouts
        previews = [o for n, o in of_kind(objs, "Service").items() if n.endswith("-preview")]
        assert previews and {_wave(o) for o in previews} == set(kinds["Rollout"])


def test_the_waves_are_argo_cds_integers(folder: Path) -> None:
    values = profile_values_file("production", folder, rollouts=True)
    for o in objects(render_text(values)):
        wave = (o["metadata"].get("annotations") or {}).get(WAVE)
        assert wave is None or re.fullmatch(r"-?\d+", wave), (o["metadata"]["name"], wave)


# --- on the API server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def argocd(cluster_with_crds: KubeCluster) -> KubeCluster:
    """The cluster with Argo CD's CRDs and its namespace (no Argo CD: the objects only)."""
    cluster_with_crds.kubectl("create", "namespace", "argocd")
    return cluster_with_crds


def test_the_api_server_accepts_the_gitops_objects(argocd: KubeCluster) -> None:
    cluster = argocd
    for path in MANIFESTS:
        cluster.kubectl("apply", "--server-side", "-f", str(path))
    apps = cluster.get_json("applications.argoproj.io", "-n", "argocd")["items"]
    assert {a["metadata"]["name"] for a in apps} == {"kb-platform-root", *ENVIRONMENTS}
    projects = cluster.get_json("appprojects.argoproj.io", "-n", "argocd")["items"]
    assert {p["metadata"]["name"] for p in projects} == set(_projects())


@pytest.mark.parametrize(("change", "field"), BROKEN)
def test_the_api_server_refuses_a_broken_application(
    change: Any, field: str, argocd: KubeCluster
) -> None:
    bad = _broken(change)
    bad["metadata"]["name"] = "kb-platform-broken"
    result = argocd.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-",
        input=json.dumps(bad), check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr

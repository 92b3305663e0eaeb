"""The kb-platform chart, rendered with each profile: `helm lint`, strict validation of every
object against the Kubernetes API's schemas and the CRDs' (each validator shown rejecting a
broken case), and the properties the platform relies on: probes on the warm-up endpoints,
requests and limits everywhere, autoscalers and disruption budgets that point at what exists,
GPU placement, least-privilege accounts, the allowed network flows, and the Dagster chart's
values naming this chart's objects."""

from __future__ import annotations

import json
import shutil
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
    pod_specs,
    profile_values_file,
    render_text,
    stack_values,
)
from kb_platform_tests.deploy.network_flows import Peer, allows

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chart")


@pytest.fixture(scope="module")
def rendered(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Each profile's objects; their YAML also written to <profile>.yaml in ``folder``."""
    out = {}
    for profile in PROFILES:
        text = render_text(profile_values_file(profile, folder))
        (folder / f"{profile}.yaml").write_text(text)
        out[profile] = objects(text)
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_passes(profile: str, folder: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(profile_values_file(profile, folder)))
    assert "0 chart(s) failed" in result.stdout


def test_helm_lint_rejects_a_broken_template(folder: Path) -> None:
    broken = folder / "broken-chart"
    shutil.copytree(CHART, broken, symlinks=False)
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nothing.here }\n")
    assert helm("lint", str(broken), check=False).returncode != 0


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_is_valid_against_the_strict_schemas(
    profile: str, rendered: dict, folder: Path
) -> None:
    result = kubeconform(folder / f"{profile}.yaml", crd_schema_dir=crd_schemas(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(rendered[profile])
    assert f"{count} resources found" in result.stdout and "Skipped: 0" in result.stdout


@pytest.mark.parametrize(
    ("kind", "broken"),
    [
        ("Deployment", {"spec": {"replica": 2}}),  # misspelt field
        ("HorizontalPodAutoscaler", {"spec": {"maxReplicas": "ten"}}),  # wrong type
        ("ServiceMonitor", {"spec": {"endpoints": [{"port": "http", "intervall": "30s"}]}}),
        ("VolumeSnapshotClass", {"deletionPolicy": "Sometimes"}),  # not in the CRD's enum
    ],
)
def test_kubeconform_rejects_a_broken_object(
    kind: str, broken: dict, rendered: dict, folder: Path
) -> None:
    original = next(o for o in rendered["default"] if o["kind"] == kind)
    bad = _merge(json.loads(json.dumps(original)), broken)
    path = folder / f"broken-{kind}.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = kubeconform(path, crd_schema_dir=crd_schemas(folder))
    assert result.returncode != 0 and "Invalid: 1" in result.stdout, result.stdout


def _merge(base: dict, change: dict) -> dict:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list):
            base[key] = [_merge(b, v) for b, v in zip(base[key], value, strict=False)]
        else:
            base[key] = value
    return base


@pytest.mark.parametrize("profile", PROFILES)
def test_every_container_has_requests_and_limits(profile: str, rendered: dict) -> None:
    for owner, spec in pod_specs(rendered[profile]).items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (owner, container)


@pytest.mark.parametrize("profile", PROFILES)
def test_services_probe_their_warm_up_and_roll_without_losing_capacity(
    profile: str, rendered: dict
) -> None:
    deployments = of_kind(rendered[profile], "Deployment")
    for name in ("kb-platform-rag", "kb-platform-encoder"):
        spec = deployments[name]["spec"]
        (container,) = spec["template"]["spec"]["containers"]
        startup, ready, live = (
            container["startupProbe"],
            container["readinessProbe"],
            container["livenessProbe"],
        )
        assert startup["httpGet"]["path"] == "/healthz" and startup["failureThreshold"] == 30
        assert ready["httpGet"]["path"] == "/readyz" and ready["periodSeconds"] == 10
        assert live["httpGet"]["path"] == "/livez"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        # burstable QoS: requests below limits
        resources = container["resources"]
        assert resources["requests"] != resources["limits"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert not security["allowPrivilegeEscalation"]


@pytest.mark.parametrize("profile", PROFILES)
def test_autoscalers_and_budgets_point_at_what_exists(profile: str, rendered: dict) -> None:
    objs = rendered[profile]
    deployments = of_kind(objs, "Deployment")
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert {
            m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"
        } == {
            "cpu",
            "memory",
        }
        if target["name"] == "kb-platform-rag":
            assert kinds["Pods"]["pods"]["metric"]["name"] == "kb_serving_requests_per_second"
    values = stack_values(profile)["kb-platform"]
    scaled = {
        f"kb-platform-{n}" for n, s in values["services"].items() if s["autoscaling"]["enabled"]
    }
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == scaled
    for pdb in of_kind(objs, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in deployments.values()
        ), pdb["metadata"]["name"]


def test_production_places_the_encoder_on_gpu_nodes(rendered: dict) -> None:
    spec = pod_specs(rendered["production"])["kb-platform-encoder"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"kb-platform/node-group": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    rag = pod_specs(rendered["production"])["kb-platform-rag"]
    assert "nvidia.com/gpu" not in rag["containers"][0]["resources"]["limits"]
    assert "tolerations" not in rag


def test_run_pods_get_their_modality_s_resources(rendered: dict) -> None:
    (settings,) = [
        o
        for o in rendered["default"]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kb-platform-settings"
    ]
    resources = json.loads(settings["data"]["KB_RUN_RESOURCES"])
    assert set(resources) == {"text", "image", "document", "audio"}
    assert resources["document"]["limits"]["memory"] == "6Gi"
    timeouts = stack_values("default")["kb-platform"]["platform"]["timeouts"]
    assert settings["data"]["KB_TIMEOUT_DOCUMENT_S"] == str(timeouts["document"])


def role_writes(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every verb of ``rules`` that changes something."""
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
        if v in {"create", "delete", "update", "patch"}
    }


def test_only_the_dagster_and_snapshot_accounts_can_reach_the_api(rendered: dict) -> None:
    objs = rendered["default"]
    accounts = of_kind(objs, "ServiceAccount")
    with_token = {n for n, a in accounts.items() if a.get("automountServiceAccountToken")}
    assert with_token == {"kb-platform-dagster", "kb-platform-snapshots"}
    for owner, spec in pod_specs(objs).items():
        assert spec["serviceAccountName"] in accounts, owner
    rules = of_kind(objs, "Role")["kb-platform-run-launcher"]["rules"]
    writes = role_writes(rules)
    assert writes == {("batch", "jobs", "create"), ("batch", "jobs", "delete")}
    assert not any(r in {"secrets", "*"} for rule in rules for r in rule["resources"])
    assert not of_kind(objs, "ClusterRole") and not of_kind(objs, "ClusterRoleBinding")


def test_the_dagster_chart_values_name_this_chart_s_objects(rendered: dict) -> None:
    """The official chart is not reachable here; its values must at least refer to the settings,
    accounts and Secrets this chart makes or names."""
    for profile in PROFILES:
        values = stack_values(profile)
        dagster, ours = values["dagster"], values["kb-platform"]
        objs = rendered[profile]
        config_maps = of_kind(objs, "ConfigMap")
        accounts = of_kind(objs, "ServiceAccount")
        secret_names = {
            s["name"] for s in ours["secrets"].values() if isinstance(s, dict) and "name" in s
        }
        launcher = dagster["runLauncher"]
        assert launcher["type"] == "K8sRunLauncher"
        k8s = launcher["config"]["k8sRunLauncher"]
        users = dagster["dagster-user-deployments"]["deployments"]
        env_maps = [
            *dagster["dagsterWebserver"]["envConfigMaps"],
            *dagster["dagsterDaemon"]["envConfigMaps"],
            *k8s["envConfigMaps"],
            *(m for u in users for m in u["envConfigMaps"]),
        ]
        assert {m["name"] for m in env_maps} <= set(config_maps), profile
        env_secrets = [*k8s["envSecrets"], *(s for u in users for s in u["envSecrets"])]
        assert {s["name"] for s in env_secrets} <= secret_names, profile
        assert dagster["global"]["serviceAccountName"] in accounts
        assert k8s["runK8sConfig"]["podSpecConfig"]["serviceAccountName"] in accounts
        assert dagster["global"]["postgresqlSecretName"] == ours["secrets"]["postgres"]["name"]
        assert dagster["postgresql"]["postgresqlHost"] == ours["platform"]["postgres"]["host"]
        assert {u["labels"]["kb-platform/role"] for u in users} == {"dagster"}
        assert k8s["runK8sConfig"]["podTemplateSpecMetadata"]["labels"]["kb-platform/role"] == "run"


def test_the_operator_objects_carry_the_project_s_rules_and_dashboards(rendered: dict) -> None:
    objs = rendered["default"]
    (rule,) = of_kind(objs, "PrometheusRule").values()
    source = yaml.safe_load((REPO_ROOT / "deploy/prometheus/rules/kb-platform.yml").read_text())
    assert rule["spec"] == source
    dashboards = {
        key
        for cm in of_kind(objs, "ConfigMap").values()
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key in cm["data"]
    }
    assert dashboards == {p.name for p in (REPO_ROOT / "deploy/grafana/dashboards").glob("*.json")}


# The flows the platform needs, and a few it must not have.
POD = {"app.kubernetes.io/name": "kb-platform"}
RAG = Peer("rag", NAMESPACE, {**POD, "app.kubernetes.io/component": "rag"}, ports={"http": 3000})
ENCODER = Peer(
    "encoder", NAMESPACE, {**POD, "app.kubernetes.io/component": "encoder"}, ports={"http": 3000}
)
EXPORTER = Peer(
    "exporter",
    NAMESPACE,
    {**POD, "app.kubernetes.io/component": "exporter"},
    ports={"metrics": 9108},
)
SNAPSHOTS = Peer("snapshots", NAMESPACE, {**POD, "app.kubernetes.io/component": "snapshots"})
RUN = Peer("run pod", NAMESPACE, {"kb-platform/role": "run"})
DAGSTER = Peer("dagster", NAMESPACE, {"kb-platform/role": "dagster"})
INGRESS = Peer("ingress controller", "kube-system", {"app": "alb"})
PROMETHEUS = Peer("prometheus", "monitoring", {"app": "prometheus"})
DNS = Peer("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
OTHER = Peer("pod of another namespace", "default", {"app": "x"})
MANAGED = Peer("MSK/Elastic/RDS/S3 (VPC)", ip="10.1.2.3")
INTERNET = Peer("internet", ip="93.184.216.34")

EXPECTED = {
    (INGRESS, RAG, 3000),
    (PROMETHEUS, RAG, 3000),
    (PROMETHEUS, ENCODER, 3000),
    (PROMETHEUS, EXPORTER, 9108),
    (RUN, ENCODER, 3000),
    (RUN, MANAGED, 9096),
    (RUN, MANAGED, 443),
    (RUN, MANAGED, 5432),
    (DAGSTER, DAGSTER, 3030),
    (DAGSTER, MANAGED, 5432),
    (DAGSTER, MANAGED, 443),
    (DAGSTER, MANAGED, 9096),
    (RAG, MANAGED, 443),
    (EXPORTER, MANAGED, 5432),
    (EXPORTER, MANAGED, 9096),
    (SNAPSHOTS, MANAGED, 443),
    (INGRESS, DAGSTER, 80),
}
PEERS = (
    RAG,
    ENCODER,
    EXPORTER,
    SNAPSHOTS,
    RUN,
    DAGSTER,
    INGRESS,
    PROMETHEUS,
    OTHER,
    MANAGED,
    INTERNET,
)
PORTS = (80, 443, 3000, 3030, 5432, 9096, 9108)


def test_network_policies_allow_exactly_the_platform_s_flows(rendered: dict) -> None:
    policies = [
        {**p, "metadata": {**p["metadata"], "namespace": NAMESPACE}}
        for p in rendered["default"]
        if p["kind"] == "NetworkPolicy"
    ]
    allowed = {
        (source, destination, port)
        for source in PEERS
        for destination in PEERS
        for port in PORTS
        if source is not destination or source is DAGSTER
        if allows(policies, source, destination, port)
        # only flows that start or end in the namespace are the chart's business
        if NAMESPACE in (source.namespace, destination.namespace)
    }
    print("\nallowed flows:")
    for source, destination, port in sorted(allowed, key=lambda f: (f[0].name, f[1].name, f[2])):
        print(f"  {source.name:>22} -> {destination.name}:{port}")
    assert allowed == EXPECTED
    # every pod of the namespace resolves names, and nothing reaches the internet
    for pod in (RAG, ENCODER, EXPORTER, SNAPSHOTS, RUN, DAGSTER):
        assert allows(policies, pod, DNS, 53, "UDP"), pod.name
        assert not any(allows(policies, pod, INTERNET, port) for port in PORTS), pod.name


def test_production_accounts_assume_the_eks_cluster_s_roles(rendered: dict) -> None:
    cluster = yaml.safe_load((REPO_ROOT / "deploy/cluster/eks/cluster.yaml").read_text())
    roles = {
        a["metadata"]["name"]: a["roleName"]
        for a in cluster["iam"]["serviceAccounts"]
        if a["metadata"].get("namespace") == NAMESPACE
    }
    accounts = of_kind(rendered["production"], "ServiceAccount")
    assert roles and set(roles) <= set(accounts)
    for name, account in accounts.items():
        arn = account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        if name in roles:
            assert arn is not None and arn.endswith(f":role/{roles[name]}"), name
        else:
            assert arn is None, name  # no AWS role for accounts that need none


def test_training_on_the_cluster_gets_an_account_of_its_own(folder: Path) -> None:
    """training.launchOnCluster: the train_generator runs (by their dagster-k8s tag, which
    dagster-k8s must accept) may create the trainer's Job and Service and delete the Job, and
    nothing else; the trainer pods have no API access; the settings name what the chart made."""
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    from kb_platform.config import Settings
    from kb_platform.resources.training_cluster import K8S_CONFIG_TAG, training_run_tags
    from kb_platform.training.k8s_job import TrainingJob

    values = profile_values_file("default", folder)
    text = render_text(values, "training.launchOnCluster=true")
    (folder / "training.yaml").write_text(text)
    result = kubeconform(folder / "training.yaml", crd_schema_dir=crd_schemas(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    objs = objects(text)
    accounts = of_kind(objs, "ServiceAccount")
    assert accounts["kb-platform-training-launcher"]["automountServiceAccountToken"] is True
    assert accounts["kb-platform-training"]["automountServiceAccountToken"] is False
    rules = of_kind(objs, "Role")["kb-platform-training-launcher"]["rules"]
    writes = role_writes(rules)
    assert writes == {("batch", "jobs", "create"), ("batch", "jobs", "delete"),
                      ("", "services", "create")}  # fmt: skip
    assert not any(r in {"secrets", "*"} for rule in rules for r in rule["resources"])
    binding = of_kind(objs, "RoleBinding")["kb-platform-training-launcher"]
    assert binding["subjects"][0]["name"] == "kb-platform-training-launcher"

    data = of_kind(objs, "ConfigMap")["kb-platform-settings"]["data"]
    settings = Settings(
        training_namespace=data["KB_TRAINING_NAMESPACE"],
        training_image=data["KB_TRAINING_IMAGE"],
        training_run_service_account=data["KB_TRAINING_RUN_SERVICE_ACCOUNT"],
        training_claim=data["KB_TRAINING_CLAIM"],
        training_mount=data["KB_TRAINING_MOUNT"],
    )
    assert settings.training_run_service_account in accounts
    assert settings.training_image.split("/")[-1].startswith("kb-training:")
    job = TrainingJob("lm", settings.training_image, "/shared/c.json", nodes=2, gpus_per_node=8)
    assert job.service_account in accounts  # what the trainer pods run as
    tag = training_run_tags(settings)[K8S_CONFIG_TAG]
    config = UserDefinedDagsterK8sConfig.from_dict(tag)
    assert config.pod_spec_config["service_account_name"] == "kb-platform-training-launcher"
    policies = of_kind(objs, "NetworkPolicy")
    launcher = policies["kb-platform-training-launcher"]["spec"]["podSelector"]["matchLabels"]
    assert launcher == config.pod_template_spec_metadata["labels"]
    assert "kb-platform-training" in policies
    assert training_run_tags(Settings()) == {}  # off by default: runs keep their own account
    default = objects(render_text(values))
    assert "kb-platform-training-launcher" not in of_kind(default, "ServiceAccount")

"""The EKS cluster as code (deploy/cluster/eks), checked offline: cluster.yaml against eksctl
v0.215.0's own ClusterConfig schema (deploy/cluster/eks/schema.sh, from the eksctl Go module),
with the schema shown rejecting broken copies; the IAM policy documents the schema leaves free
against a policy schema of our own; what the platform relies on (the three node groups, GPU
labels and taints matching the chart's encoder placement, IRSA roles of the platform's accounts,
the add-ons, the autoscaler's tags and rights); and the manifests eksctl does not apply, strictly
validated with kubeconform (also shown rejecting a broken one)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kb_platform_tests.deploy.chart import kubeconform, of_kind
from kb_platform_tests.deploy.eks_config import (
    ADDONS,
    CHART_VALUES,
    CLUSTER,
    GPU_LABEL,
    GPU_TAINT,
    MANIFESTS,
    PLATFORM_ACCOUNTS,
    S3_WRITES,
    eksctl_regions,
    eksctl_versions,
    explain,
    nvidia_instance_types,
    schema_errors,
    schema_path,
    strict,
    validator,
)

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def node_groups(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {ng["name"]: ng for ng in config["managedNodeGroups"]}


def instance_types(ng: dict[str, Any]) -> list[str]:
    return ng.get("instanceTypes") or [ng["instanceType"]]


def accounts(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{sa['metadata']['namespace']}/{sa['metadata']['name']}": sa
        for sa in config["iam"]["serviceAccounts"]
    }


def statements(account: dict[str, Any]) -> list[dict[str, Any]]:
    return account["attachPolicy"]["Statement"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allowed_actions(account: dict[str, Any]) -> set[str]:
    return {a for s in statements(account) if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    """Kubernetes' rule: a toleration matches the taint's key (an empty key with Exists matches
    every key), its value (Equal) and its effect (an empty effect matches all)."""
    for t in tolerations:
        operator = t.get("operator", "Equal")
        key_ok = t.get("key", "") == taint["key"] or (not t.get("key") and operator == "Exists")
        value_ok = operator == "Exists" or t.get("value", "") == taint.get("value", "")
        effect_ok = not t.get("effect") or t["effect"] == taint["effect"]
        if key_ok and value_ok and effect_ok:
            return True
    return False


def selects(node_selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in node_selector.items())


# --- the schema ---------------------------------------------------------------------------------


def test_the_schema_is_eksctls_closed_cluster_config_schema(config: dict[str, Any]) -> None:
    schema = json.loads(schema_path().read_text())
    assert schema["$ref"] == "#/definitions/ClusterConfig"
    _, added = strict(schema)
    # eksctl closes every object it describes: strict() only adds the missing object types
    assert [where for where, keyword in added if keyword == "additionalProperties"] == []
    assert {keyword for _, keyword in added} == {"type"}
    # ... without which eksctl's schema as published takes a string for a taint
    broken = copy.deepcopy(config)
    broken["managedNodeGroups"][1]["taints"] = ["nvidia.com/gpu=present:NoSchedule"]
    assert jsonschema.Draft7Validator(schema).is_valid(broken)
    assert not validator().is_valid(broken)


def test_cluster_config_is_valid_against_eksctls_schema(config: dict[str, Any]) -> None:
    errors = schema_errors(config)
    assert not errors, "cluster.yaml does not validate:\n" + explain(errors)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _policy_of(index: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda config: config["iam"]["serviceAccounts"][index]["attachPolicy"]


BROKEN = {
    # name: (change, the validator keyword that must fail, the path it must fail at)
    "unknown top-level key": (
        _set(["managedNodeGroup"], []),
        "additionalProperties",
        [],
    ),
    "unknown node group key": (
        _set(["managedNodeGroups", 2, "spotInstances"], True),
        "additionalProperties",
        ["managedNodeGroups", 2],
    ),
    "unknown add-on key": (
        _set(["addons", 0, "configuration"], "{}"),
        "additionalProperties",
        ["addons", 0],
    ),
    "string where an integer goes": (
        _set(["managedNodeGroups", 0, "minSize"], "3"),
        "type",
        ["managedNodeGroups", 0, "minSize"],
    ),
    "taint as a string": (
        _set(["managedNodeGroups", 1, "taints"], ["nvidia.com/gpu=present:NoSchedule"]),
        "type",
        ["managedNodeGroups", 1, "taints", 0],
    ),
    "unknown AMI family": (
        _set(["managedNodeGroups", 1, "amiFamily"], "AmazonLinux3"),
        "enum",
        ["managedNodeGroups", 1, "amiFamily"],
    ),
    "withOIDC as a string": (
        _set(["iam", "withOIDC"], "true"),
        "type",
        ["iam", "withOIDC"],
    ),
    "misspelt policy key": (
        lambda c: _policy_of(2)(c)["Statement"][0].update(Actions=["s3:GetObject"]),
        "additionalProperties",
        ["iam", "serviceAccounts", 2, "attachPolicy", "Statement", 0],
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_schema_rejects_a_broken_copy(config: dict[str, Any], case: str) -> None:
    change, keyword, path = BROKEN[case]
    broken = copy.deepcopy(config)
    change(broken)
    errors = schema_errors(broken)
    assert errors, f"{case}: the broken copy validated"
    assert any(e.validator == keyword and list(e.absolute_path) == path for e in errors), (
        f"{case}: expected a {keyword!r} error at {path}, got:\n{explain(errors)}"
    )


def test_version_and_region_are_ones_eksctl_knows(config: dict[str, Any]) -> None:
    meta = config["metadata"]
    versions, al2_eol = eksctl_versions()
    assert meta["region"] in eksctl_regions()
    assert meta["version"] in versions, f"eksctl v0.215.0 knows {sorted(versions)}"
    # the platform's bucket, RDS and MSK are in the chart's S3 region
    chart = yaml.safe_load(CHART_VALUES.read_text())
    assert meta["region"] == chart["platform"]["s3"]["region"]
    minor = tuple(int(p) for p in meta["version"].split("."))
    eol = tuple(int(p) for p in al2_eol.split("."))
    if minor >= eol:  # no Amazon Linux 2 AMIs for this version
        for ng in config["managedNodeGroups"]:
            assert ng.get("amiFamily") not in (None, "AmazonLinux2"), ng["name"]


# --- node groups --------------------------------------------------------------------------------


def test_three_node_groups_cpu_on_demand_gpu_on_demand_gpu_spot(config: dict[str, Any]) -> None:
    groups, nvidia = node_groups(config), nvidia_instance_types()
    assert not config.get("nodeGroups"), "only EKS-managed node groups"
    assert set(groups) == {"cpu-ondemand", "gpu-ondemand", "gpu-spot"}

    def gpu(ng: dict[str, Any]) -> bool:
        types = instance_types(ng)
        unknown = [t for t in types if t not in nvidia]
        assert not unknown, f"{ng['name']}: eksctl does not know {unknown}"
        kinds = {nvidia[t] for t in types}
        assert len(kinds) == 1, f"{ng['name']} mixes GPU and CPU instance types"
        return kinds.pop()

    cpu, od, spot = groups["cpu-ondemand"], groups["gpu-ondemand"], groups["gpu-spot"]
    assert not cpu.get("spot") and not gpu(cpu)
    assert not od.get("spot") and gpu(od)
    assert spot.get("spot") is True and gpu(spot)
    assert len(spot["instanceTypes"]) >= 2, "spot needs several instance types (capacity pools)"
    assert cpu["minSize"] >= 1 and od["minSize"] >= 1, "on-demand groups keep a baseline"
    for ng in groups.values():
        assert ng["minSize"] <= ng.get("desiredCapacity", ng["minSize"]) <= ng["maxSize"]
        assert ng["maxSize"] > ng["minSize"], f"{ng['name']} has no room to scale"
        assert ng.get("privateNetworking") is True and ng.get("volumeEncrypted") is True


def test_gpu_groups_are_labelled_and_tainted_for_the_encoder(config: dict[str, Any]) -> None:
    groups = node_groups(config)
    encoder_gpu = yaml.safe_load(CHART_VALUES.read_text())["services"]["encoder"]["gpu"]
    for name, ng in groups.items():
        labels, taints = ng.get("labels", {}), ng.get("taints", [])
        if name.startswith("gpu-"):
            assert labels.get(GPU_LABEL[0]) == GPU_LABEL[1], name
            assert GPU_TAINT in taints, name
            # the chart's encoder (gpu.enabled) lands there and tolerates every taint
            assert selects(encoder_gpu["nodeSelector"], labels), name
            assert all(tolerates(encoder_gpu["tolerations"], t) for t in taints), name
        else:
            assert labels.get(GPU_LABEL[0]) != GPU_LABEL[1], name
            assert not taints, name
            assert not selects(encoder_gpu["nodeSelector"], labels), name


# --- IAM ----------------------------------------------------------------------------------------


def test_the_platforms_accounts_have_least_privilege_irsa_roles(config: dict[str, Any]) -> None:
    assert config["iam"]["withOIDC"] is True
    roles = accounts(config)
    bucket = yaml.safe_load(CHART_VALUES.read_text())["platform"]["s3"]["bucket"]
    for component in PLATFORM_ACCOUNTS:
        account = roles.get(f"kb/kb-platform-{component}")
        assert account, f"no IRSA role for kb/kb-platform-{component}"
        # the chart makes the account; eksctl only the role, under a name the chart can annotate
        assert account.get("roleOnly") is True and account.get("roleName"), component
        for statement in statements(account):
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{component}: wildcard action {action}"
            if any(a.startswith("s3:") for a in as_list(statement["Action"])):
                for resource in as_list(statement["Resource"]):
                    assert resource.startswith(f"arn:aws:s3:::{bucket}"), resource
    for component in ("dagster", "run"):
        actions = allowed_actions(roles[f"kb/kb-platform-{component}"])
        assert {"s3:GetObject", "s3:ListBucket"} | S3_WRITES <= actions, component
    rag = allowed_actions(roles["kb/kb-platform-rag"])
    assert "s3:GetObject" in rag and not rag & S3_WRITES
    exporter = allowed_actions(roles["kb/kb-platform-exporter"])
    assert not any(a.startswith("s3:") for a in exporter)
    assert not any(a.endswith(("WriteData", "AlterGroup")) for a in exporter), "read-only"


def test_addons_with_network_policies_and_their_irsa_roles(config: dict[str, Any]) -> None:
    addons = {a["name"]: a for a in config["addons"]}
    assert set(addons) >= ADDONS
    cni = addons["vpc-cni"]
    assert json.loads(cni["configurationValues"]).get("enableNetworkPolicy") == "true"
    assert "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy" in cni.get("attachPolicyARNs", [])
    ebs = addons["aws-ebs-csi-driver"]
    assert ebs.get("wellKnownPolicies", {}).get("ebsCSIController") is True


# --- autoscaling --------------------------------------------------------------------------------


def test_node_groups_carry_the_autoscalers_discovery_tags(config: dict[str, Any]) -> None:
    cluster = config["metadata"]["name"]
    for ng in config["managedNodeGroups"]:
        tags = ng.get("tags", {})
        assert tags.get("k8s.io/cluster-autoscaler/enabled") == "true", ng["name"]
        assert f"k8s.io/cluster-autoscaler/{cluster}" in tags, ng["name"]
        # labels and taints as node-template tags: scale-up from zero knows the node's shape
        assert ng.get("propagateASGTags") is True, ng["name"]


def test_the_autoscaler_may_scale_only_this_clusters_groups(config: dict[str, Any]) -> None:
    cluster = config["metadata"]["name"]
    account = accounts(config)["kube-system/cluster-autoscaler"]
    assert not account.get("roleOnly"), "eksctl makes this account (its manifest has none)"
    actions = allowed_actions(account)
    assert {
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeTags",
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "ec2:DescribeInstanceTypes",
        "eks:DescribeNodegroup",
    } <= actions
    for statement in statements(account):
        if {"autoscaling:SetDesiredCapacity"} & set(as_list(statement["Action"])):
            condition = statement.get("Condition", {}).get("StringEquals", {})
            assert condition.get(f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster}") == (
                "owned"
            ), "scaling actions must be limited to this cluster's node groups"


def test_the_autoscaler_deployment_matches_the_cluster(
    config: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    cluster, version = config["metadata"]["name"], config["metadata"]["version"]
    deployment = of_kind(manifests, "Deployment")["cluster-autoscaler"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # its account is eksctl's IRSA one, and the RBAC is bound to that account
    name = f"{deployment['metadata']['namespace']}/{pod['serviceAccountName']}"
    assert name in accounts(config)
    assert "ServiceAccount" not in {o["kind"] for o in manifests}
    bindings = [o for o in manifests if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == 2
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert f"{subject['namespace']}/{subject['name']}" == name
    # the release of the cluster's minor version, discovering by the node groups' tags
    assert re.fullmatch(rf".*/cluster-autoscaler:v{re.escape(version)}\.\d+", container["image"])
    args = container["command"]
    discovery = f"asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/{cluster}"
    assert f"--node-group-auto-discovery={discovery}" in args
    assert "--cloud-provider=aws" in args
    # on the CPU group
    assert selects(pod.get("nodeSelector", {}), node_groups(config)["cpu-ondemand"]["labels"])
    # the priority expander prefers the spot GPU group's ASG (named eks-<group>-<uuid>)
    assert any(a.startswith("--expander=priority") for a in args)
    priorities = yaml.safe_load(
        of_kind(manifests, "ConfigMap")["cluster-autoscaler-priority-expander"]["data"][
            "priorities"
        ]
    )

    def priority(asg: str) -> int:
        return max(
            p for p, patterns in priorities.items() if any(re.match(r, asg) for r in patterns)
        )

    uuid = "d2c6f1a0-0000-4000-8000-000000000000"
    spot = priority(f"eks-gpu-spot-{uuid}")
    assert spot > priority(f"eks-gpu-ondemand-{uuid}")
    assert spot > priority(f"eks-cpu-ondemand-{uuid}")


def test_the_device_plugin_runs_only_on_the_gpu_groups(
    config: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    pod = of_kind(manifests, "DaemonSet")["nvidia-device-plugin-daemonset"]["spec"]["template"]
    spec = pod["spec"]
    for name, ng in node_groups(config).items():
        runs_there = selects(spec.get("nodeSelector", {}), ng.get("labels", {})) and all(
            tolerates(spec.get("tolerations", []), t) for t in ng.get("taints", [])
        )
        assert runs_there == name.startswith("gpu-"), name


# --- the manifests ------------------------------------------------------------------------------


def test_every_manifest_container_is_pinned_bounded_and_unprivileged(
    manifests: list[dict[str, Any]],
) -> None:
    pods = [
        o["spec"]["template"]["spec"] for o in manifests if o["kind"] in ("Deployment", "DaemonSet")
    ]
    assert len(pods) == 2
    for pod in pods:
        for c in pod.get("initContainers", []) + pod["containers"]:
            image = c["image"]
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{image}: not a pinned release tag"
            resources = c.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources.get(bound, {}).keys(), (c["name"], bound)
            security = c.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, c["name"]
            assert security.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
            assert not security.get("privileged"), c["name"]
    # non-root where upstream allows it: the autoscaler; the device plugin needs root for its
    # socket in the kubelet's root-owned folder (its manifest says so)
    autoscaler = of_kind(manifests, "Deployment")["cluster-autoscaler"]["spec"]["template"]
    assert autoscaler["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_manifests_are_valid_against_the_strict_kubernetes_schemas() -> None:
    result = kubeconform(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def test_kubeconform_rejects_a_broken_manifest(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    broken = copy.deepcopy(of_kind(manifests, "DaemonSet")["nvidia-device-plugin-daemonset"])
    broken["spec"]["template"]["spec"]["nodeSelectors"] = {"kb-platform/node-group": "gpu"}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = kubeconform(path)
    assert result.returncode != 0
    assert "nodeSelectors" in result.stdout, result.stdout

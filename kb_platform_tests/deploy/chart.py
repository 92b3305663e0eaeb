"""Rendering the kb-platform chart with each profile, and validating what it renders, with the
project's own tools (deploy/cluster/tools.sh, crds.sh): helm, kubeconform with the Kubernetes
API's strict schemas and those of the CRDs the chart's objects use."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kb_platform.config import REPO_ROOT
from kb_platform_tests.deploy.kube_cluster import tool_path

CHART = REPO_ROOT / "deploy" / "helm" / "kb-platform"
STACK = REPO_ROOT / "deploy" / "helm" / "kb-platform-stack"
PROFILES = ("default", "local", "staging", "production")
NAMESPACE = "kb"


def stack_values(profile: str) -> dict[str, Any]:
    """The stack chart's values of a profile as its two charts see them: the kb-platform part
    over kb-platform's own defaults, the profile over the stack's defaults."""
    values = yaml.safe_load((STACK / "values.yaml").read_text())
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values["kb-platform"] = _merged(chart_defaults, values.get("kb-platform") or {})
    if profile != "default":
        override = yaml.safe_load((STACK / f"values-{profile}.yaml").read_text())
        for part in ("kb-platform", "dagster"):
            values[part] = _merged(values.get(part) or {}, override.get(part) or {})
    return values


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values: maps merge key by key, anything else (lists too) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def profile_values_file(
    profile: str, folder: Path, *, rollouts: bool = False, strategy: str | None = None
) -> Path:
    """The profile's kb-platform part as a values file for the kb-platform chart.

    ``rollouts``: keep the profile's Argo Rollouts (staging and production turn them on). Off
    by default: the Deployment-shaped checks (test_helm_chart.py) and the `helm install` on the
    test API server, where no Rollouts controller runs to start pods, see each service's plain
    Deployment and its HPA; test_rollouts.py checks the profiles as Argo CD deploys them.
    ``strategy`` (with ``rollouts``): canary or blueGreen instead of the profile's."""
    values = stack_values(profile)["kb-platform"]
    suffix = ""
    if rollouts:
        if strategy is not None:
            values["rollouts"] = {**values["rollouts"], "strategy": strategy}
        suffix = f"-rollouts-{values['rollouts']['strategy']}"
    else:
        values["rollouts"] = {**values["rollouts"], "enabled": False}
    path = folder / f"kb-platform-{profile}{suffix}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool_path("helm")), *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


def render_text(values: Path, *sets: str, chart: Path = CHART) -> str:
    flags = [arg for s in sets for arg in ("--set", s)]
    return helm(
        "template", "kb", str(chart), "--namespace", NAMESPACE, "-f", str(values), *flags
    ).stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@cache
def crd_folder() -> Path:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "cluster" / "crds.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


def crd_schemas(folder: Path) -> Path:
    target = folder / "crd-schemas"
    if not target.exists():
        subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "deploy" / "cluster" / "crd_schemas.py"),
                str(crd_folder()),
                str(target),
            ],
            check=True,
            capture_output=True,
        )
    return target


def kubeconform(
    *manifests: Path, crd_schema_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``kubeconform -strict`` against the Kubernetes schemas (and the CRDs' when given)."""
    template = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    locations = [f"{tool_path('k8s-schemas')}/{template}"]
    if crd_schema_dir is not None:
        locations.append(f"{crd_schema_dir}/{template}")
    return subprocess.run(
        [
            str(tool_path("kubeconform")),
            "-strict",
            "-summary",
            "-output",
            "text",
            *(arg for location in locations for arg in ("-schema-location", location)),
            *map(str, manifests),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def of_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered if o["kind"] == kind}


def pod_specs(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template the chart renders (Deployments, CronJobs), by its owner's name."""
    specs = {}
    for o in rendered:
        if o["kind"] == "Deployment":
            specs[o["metadata"]["name"]] = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            specs[o["metadata"]["name"]] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs

"""eksctl's ClusterConfig schema made strict, and what eksctl's own source says it knows
(versions, regions, NVIDIA instance types), for test_eks_cluster.py."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from kb_platform.config import REPO_ROOT

EKS = REPO_ROOT / "deploy" / "cluster" / "eks"
CLUSTER = EKS / "cluster.yaml"
MANIFESTS = (EKS / "cluster-autoscaler.yaml", EKS / "nvidia-device-plugin.yaml")
CHART_VALUES = REPO_ROOT / "deploy" / "helm" / "kb-platform" / "values.yaml"
TOOLS_SH = REPO_ROOT / "deploy" / "cluster" / "tools.sh"

GPU_LABEL = ("kb-platform/node-group", "gpu")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
PLATFORM_ACCOUNTS = ("dagster", "run", "rag", "exporter")  # kb-platform-<component> in "kb"
ADDONS = {"vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "snapshot-controller"}
S3_WRITES = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}

# IAM policy documents (attachPolicy) are free-form in eksctl's schema (InlineDocument): this
# closed schema catches misspelt keys ("Actions") and wrong shapes there.
_STRINGS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
POLICY_SCHEMA = {
    "type": "object",
    "required": ["Version", "Statement"],
    "additionalProperties": False,
    "properties": {
        "Version": {"const": "2012-10-17"},  # policy variables need this version
        "Statement": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["Effect", "Action", "Resource"],
                "additionalProperties": False,
                "properties": {
                    "Sid": {"type": "string", "pattern": "^[A-Za-z0-9]+$"},
                    "Effect": {"enum": ["Allow", "Deny"]},
                    "Action": _STRINGS,
                    "Resource": _STRINGS,
                    "Condition": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": _STRINGS,
                        },
                    },
                },
            },
        },
    },
}


# --- eksctl's schema and sources -------------------------------------------------------------


@cache
def schema_path() -> Path:
    """schema.json (fetched once from the eksctl module by schema.sh); types.go and
    instance_types.go beside it."""
    result = subprocess.run(
        ["bash", str(EKS / "schema.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"schema.sh failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


COMBINATORS = {"oneOf", "anyOf", "allOf"}


def strict(schema: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A copy of the schema where every object schema (one with properties) is closed and typed,
    and the (place, keyword) of each addition. eksctl's generated schema closes its objects
    (additionalProperties: false) but declares none of them "type": "object", so a string or a
    list passes wherever an object goes (a taint written "key=value:Effect" validates):
    "type": "object" is added, and additionalProperties: false wherever a release might leave
    it out. Schemas combined with oneOf / anyOf / allOf are left alone (closing them would
    reject the other branch's keys)."""
    closed = copy.deepcopy(schema)
    added: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and not COMBINATORS & node.keys():
                if "additionalProperties" not in node:
                    node["additionalProperties"] = False
                    added.append((where, "additionalProperties"))
                if "type" not in node:
                    node["type"] = "object"
                    added.append((where, "type"))
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(closed, "#")
    return closed, added


@cache
def validator() -> jsonschema.Draft7Validator:
    schema, _ = strict(json.loads(schema_path().read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(config: dict[str, Any]) -> list[jsonschema.ValidationError]:
    errors = list(validator().iter_errors(config))
    policy = jsonschema.Draft7Validator(POLICY_SCHEMA)
    for i, account in enumerate(config.get("iam", {}).get("serviceAccounts", [])):
        if "attachPolicy" in account:
            for error in policy.iter_errors(account["attachPolicy"]):
                error.path.extendleft(reversed(["iam", "serviceAccounts", i, "attachPolicy"]))
                errors.append(error)
    return errors


def explain(errors: list[jsonschema.ValidationError]) -> str:
    return "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@cache
def eksctl_source(name: str) -> str:
    return (schema_path().parent / name).read_text()


def eksctl_versions() -> tuple[set[str], str]:
    """The Kubernetes versions eksctl v0.215.0 names (its Version1_XX constants), and the first
    one without Amazon Linux 2 AMIs."""
    text = eksctl_source("types.go")
    versions = dict(re.findall(r'\b(Version1_\d+)\s*=\s*"(1\.\d+)"', text))
    eol = re.search(r"\bAmazonLinux2EOLVersion\s*=\s*(Version1_\d+)", text)
    assert versions and eol, "types.go no longer declares the versions this test reads"
    return set(versions.values()), versions[eol.group(1)]


def eksctl_regions() -> set[str]:
    text = eksctl_source("types.go")
    constants = dict(re.findall(r'\b(Region\w+)\s*=\s*"([a-z0-9-]+)"', text))
    body = re.search(r"func SupportedRegions\(\) \[\]string \{(.*?)\n\}", text, re.S)
    assert body, "types.go has no SupportedRegions()"
    return {constants[name] for name in re.findall(r"\b(Region\w+)\b", body.group(1))}


@cache
def nvidia_instance_types() -> dict[str, bool]:
    """Instance type -> whether eksctl treats it as an NVIDIA GPU type (it then picks the
    accelerated AMI); types eksctl does not know are absent."""
    text = eksctl_source("instance_types.go")
    found = re.findall(
        r'InstanceType:\s*"([^"]+)",[^}]*?NvidiaGPUSupported:\s*(true|false)', text, re.S
    )
    assert found, "instance_types.go no longer has the fields this test reads"
    return {name: flag == "true" for name, flag in found}


# --- the files under test ----------------------------------------------------------------------

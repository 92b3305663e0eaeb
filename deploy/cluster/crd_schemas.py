"""CustomResourceDefinitions -> kubeconform's strict standalone JSON schemas.

    python deploy/cluster/crd_schemas.py <folder of CRD YAML files> <output folder>

Writes one schema per kind and served version, named as kubeconform looks them up beside the
Kubernetes ones (``{{ .ResourceKind }}{{ .KindSuffix }}.json``: ``servicemonitor-monitoring-v1``),
from each version's ``openAPIV3Schema``, with ``additionalProperties: false`` on every object
that lists its properties and does not preserve unknown fields (an unknown field is an error,
as the API server's strict field validation makes it). Run by the chart's tests on the CRDs of
deploy/cluster/crds.sh; the result is never committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: strict(value) for key, value in node.items()}
    preserves = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not preserves:
        schema["additionalProperties"] = False
    if schema.pop("nullable", False) and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    return schema


def schemas_of(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = crd["spec"]
    kind, group = spec["names"]["kind"].lower(), spec["group"].split(".")[0]
    found = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        found[f"{kind}-{group}-{version['name']}.json"] = schema
    return found


def main(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(source.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "CustomResourceDefinition":
                for name, schema in schemas_of(document).items():
                    (target / name).write_text(json.dumps(schema))
                    written += 1
    if not written:
        raise SystemExit(f"no CustomResourceDefinition in {source}")
    print(f"{written} schemas in {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

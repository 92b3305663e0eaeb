"""Kubernetes OpenAPI v3 documents -> kubeconform's strict standalone JSON schemas.

    python deploy/cluster/k8s_schemas.py <k8s.io/kubernetes module zip> <output folder>

Reads ``api/openapi-spec/v3/*.json`` from the module zip (``go mod download -json
k8s.io/kubernetes@<version>`` names it) and writes one schema per kind and API version, named as
kubeconform looks them up (``{{ .ResourceKind }}{{ .KindSuffix }}.json``: ``deployment-apps-v1``,
``service-v1``, ``networkpolicy-networking-v1``), with every ``$ref`` inlined and
``additionalProperties: false`` on every object that lists its properties (an unknown field is
an error, as ``kubectl apply --validate=strict`` makes it). ``nullable`` fields also take null.
Run by deploy/cluster/tools.sh; the result is cached, never committed.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

SPEC_DIR = "/api/openapi-spec/v3/"
REF_PREFIX = "#/components/schemas/"
# Recursive types (JSONSchemaProps of CRDs) are cut after this many levels of themselves.
MAX_SELF_NESTING = 2


def read_definitions(module_zip: Path) -> dict[str, dict[str, Any]]:
    definitions: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(module_zip) as archive:
        for name in archive.namelist():
            if SPEC_DIR in name and name.endswith("_openapi.json"):
                document = json.loads(archive.read(name))
                definitions.update(document.get("components", {}).get("schemas", {}))
    if not definitions:
        raise SystemExit(f"no OpenAPI v3 documents under {SPEC_DIR} in {module_zip}")
    return definitions


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    if schema.pop("nullable", False) and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    return schema


def inline(node: Any, definitions: dict[str, dict[str, Any]], stack: tuple[str, ...]) -> Any:
    """``node`` with every $ref replaced by its definition, made strict."""
    if isinstance(node, list):
        return [inline(item, definitions, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix(REF_PREFIX)
        if stack.count(name) >= MAX_SELF_NESTING:
            return {}
        return inline(definitions[name], definitions, (*stack, name))
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: inline(v, definitions, stack) for k, v in value.items()}
        elif key == "default" or key.startswith("x-kubernetes-"):
            out[key] = value
        else:
            out[key] = inline(value, definitions, stack)
    # allOf of one $ref is how the spec attaches a description or default to a type.
    all_of = out.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        out = {**out.pop("allOf")[0], **out}  # the field's description and default win
    return _strict(out)


def kind_suffix(group: str, version: str) -> str:
    """kubeconform's KindSuffix: the group's first label (none for the core group), the version."""
    return f"-{group.split('.')[0].lower()}-{version}" if group else f"-{version}"


def convert(module_zip: Path, output: Path) -> int:
    definitions = read_definitions(module_zip)
    output.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            standalone = inline(schema, definitions, (name,))
            api_version = f"{group}/{version}" if group else version
            properties = standalone.setdefault("properties", {})
            properties["apiVersion"] = {"type": "string", "enum": [api_version]}
            properties["kind"] = {"type": "string", "enum": [kind]}
            target = output / f"{kind.lower()}{kind_suffix(group, version)}.json"
            target.write_text(json.dumps(standalone), encoding="utf-8")
            written += 1
    return written


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    count = convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{count} schemas written to {sys.argv[2]}", file=sys.stderr)


if __name__ == "__main__":
    main()

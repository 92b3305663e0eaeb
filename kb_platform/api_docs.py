"""docs/api.md and docs/api/<service>.openapi.json, written from the services' own OpenAPI schemas.

    python -m kb_platform.api_docs            # (re)write them
    python -m kb_platform.api_docs --check    # exit 1, naming the files, if they are out of date
    python -m kb_platform.api_docs --check --docs DIR   # compare with DIR/api.md, DIR/api/*.json

Each schema is the one BentoML serves at ``/docs.json`` (its server answers that route with
``Service.openapi_spec.asdict()``), taken from the service class without starting it: importing
a service module loads no model (the models load in the warm-up thread that ``__init__``
starts), so this takes seconds. What the schema cannot say is read from the code too: the
routes each front door leaves open (``kb_platform.serving.middleware``,
``kb_platform.encoder_service.front_door``), the limits' settings and defaults, the routes
mounted beside BentoML's (``/images``), and every error the services answer with, found by
reading their source for ``ServingError(...)`` and ``Refused(...)``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import http
import inspect
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb_platform.config import REPO_ROOT

DOCS_DIR = REPO_ROOT / "docs"
REGENERATE = "python -m kb_platform.api_docs"


@dataclasses.dataclass(frozen=True)
class ServiceDoc:
    name: str  # docs/api/<name>.openapi.json
    ref: str  # what `bentoml serve` takes
    title: str
    port_variable: str
    port: int
    settings_prefix: str
    settings_class: str  # module:Class of the pydantic settings
    limits: tuple[str, ...]  # settings fields shown in the limits table
    error_sources: tuple[str, ...]  # files searched for the errors the service answers with
    intro: str


SERVICES: tuple[ServiceDoc, ...] = (
    ServiceDoc(
        name="rag",
        ref="bentos/rag/service.py:RagService",
        title="RAG service",
        port_variable="KB_RAG_PORT",
        port=3030,
        settings_prefix="KB_SERVING_",
        settings_class="kb_platform.serving.settings:ServingSettings",
        limits=(
            "rate_per_s",
            "burst",
            "max_request_bytes",
            "max_image_bytes",
            "max_image_pixels",
            "max_query_chars",
            "max_k",
            "search_timeout_s",
            "ask_timeout_s",
            "search_concurrency",
            "ask_concurrency",
            "max_image_response_bytes",
            "max_image_side",
        ),
        error_sources=("bentos/rag/service.py", "kb_platform/serving/*.py"),
        intro=(
            "Search and grounded answers over the chunk index (`kb-chunks` read alias) for "
            "applications: `bentos/rag/service.py`, a thin HTTP layer over `kb_platform/serving/`."
        ),
    ),
    ServiceDoc(
        name="encoder",
        ref="bentos/encoder/service.py:EncoderService",
        title="Encoder service",
        port_variable="KB_ENCODER_PORT",
        port=3020,
        settings_prefix="KB_ENCODER_",
        settings_class="kb_platform.encoder_service.settings:EncoderSettings",
        limits=(
            "max_texts",
            "max_text_chars",
            "max_request_bytes",
            "max_image_pixels",
            "max_batch_size",
            "max_latency_ms",
        ),
        error_sources=("bentos/encoder/service.py", "kb_platform/encoder_service/*.py"),
        intro=(
            "Internal: MiniLM text and CLIP embeddings for ingestion runs (`TextEncoderResource`, "
            "`ClipEncoderResource` with `KB_ENCODER_URL`), with BentoML adaptive batching: "
            "`bentos/encoder/service.py` over `kb_platform/encoder_service/`."
        ),
    ),
)


# --- loading the services ---------------------------------------------------------------------


def _clean_environment() -> None:
    """The schemas must not depend on who runs this: no service setting from the environment."""
    for name in list(os.environ):
        if name.startswith(("KB_SERVING_", "KB_ENCODER_")):
            del os.environ[name]


def load_service(service: ServiceDoc) -> Any:
    import bentoml

    with warnings.catch_warnings():  # pydantic: "Unable to serialize value None" for file parts
        warnings.simplefilter("ignore")
        return bentoml.load(service.ref, working_dir=str(REPO_ROOT))


def openapi_spec(bento_service: Any) -> dict[str, Any]:
    """What ``GET /docs.json`` answers (BentoML's server returns exactly this)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bento_service.openapi_spec.asdict()


# --- reading the code -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RaisedError:
    status: int
    code: str
    message: str
    where: str  # path:function
    retry_after: bool


def _text(node: ast.expr | None) -> str:
    """A message as written: string parts verbatim, interpolations as ``{...}``."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{…}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "{…}"


def _const(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _has_retry_after(call: ast.Call) -> bool:
    headers = _keyword(call, "headers")
    return isinstance(headers, ast.Dict) and any(
        _const(k) == "Retry-After" for k in headers.keys if k is not None
    )


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(enclosing function or class name, node) for every node of the module."""

    def walk(node: ast.AST, scope: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            yield inner, child
            yield from walk(child, inner)

    yield from walk(tree, "")


def raised_errors(patterns: tuple[str, ...]) -> list[RaisedError]:
    """Every error response written in the sources: ``ServingError(status, message, code=...)``
    and its subclasses' ``super().__init__(...)``, the encoder's ``Refused(status, message,
    reason)``, and ``JSONResponse({"error", "code"}, status)``."""
    from kb_platform.serving.errors import _CODES

    found: list[RaisedError] = []
    files = sorted({p for pattern in patterns for p in REPO_ROOT.glob(pattern)})
    for path in files:
        relative = path.relative_to(REPO_ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope, node in _functions(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else ""
            is_super_init = (
                isinstance(func, ast.Attribute)
                and func.attr == "__init__"
                and isinstance(func.value, ast.Call)
                and isinstance(func.value.func, ast.Name)
                and func.value.func.id == "super"
            )
            where = f"{relative}:{scope or '<module>'}"
            if name == "ServingError" or (is_super_init and "." in scope):
                status = _const(node.args[0])
                if not isinstance(status, int):
                    continue
                code = _const(_keyword(node, "code")) or _CODES.get(status, "error")
                message = _text(node.args[1]) if len(node.args) > 1 else ""
                found.append(RaisedError(status, code, message, where, _has_retry_after(node)))
            elif name == "Refused" and len(node.args) == 3:
                status, code = _const(node.args[0]), _const(node.args[2])
                if isinstance(status, int) and isinstance(code, str):
                    # the encoder's front door adds Retry-After to every 503 it answers
                    found.append(
                        RaisedError(status, code, _text(node.args[1]), where, status == 503)
                    )
            elif name == "JSONResponse" and isinstance(node.args[0], ast.Dict):
                body = {
                    _const(k): v
                    for k, v in zip(node.args[0].keys, node.args[0].values, strict=True)
                }
                status = _const(node.args[1]) if len(node.args) > 1 else None
                if "code" in body and isinstance(status, int):
                    code = _const(body["code"])
                    found.append(RaisedError(status, code, _text(body.get("error")), where, False))
    return sorted(found, key=lambda e: (e.status, e.code, e.where, e.message))


def settings_rows(service: ServiceDoc) -> list[tuple[str, str, str]]:
    """(variable, default, type) of the limits' settings, from the settings class itself."""
    module_name, class_name = service.settings_class.split(":")
    settings_class = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    rows = []
    for field in service.limits:
        info = settings_class.model_fields[field]
        annotation = info.annotation.__name__ if info.annotation else ""
        rows.append((f"{service.settings_prefix}{field.upper()}", repr(info.default), annotation))
    return rows


# --- rendering --------------------------------------------------------------------------------


def _anchor(service: str, schema: str) -> str:
    return f"{service}-{schema}".lower()


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any], service: str) -> str:
    """A JSON Schema as a short Markdown type: links for references, unions, arrays, enums."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{_anchor(service, name)})"
    for union in ("anyOf", "oneOf"):
        if union in schema:
            members = [type_of(s, service) for s in schema[union]]
            return " or ".join(dict.fromkeys(members))
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}), service)}"
    if kind == "file" or schema.get("format") == "binary":
        return "file"
    if kind == "object" and "properties" not in schema:
        return "object"
    return str(kind) if kind else "any"


_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
)


def _constraints(schema: dict[str, Any]) -> list[str]:
    schema = dict(schema)
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if schema.get(bound) is True:  # OpenAPI 3.0: the boolean makes minimum/maximum strict
            schema[bound] = schema.pop(plain)
        elif schema.get(bound) is False:
            del schema[bound]
    found = [text.format(schema[key]) for key, text in _CONSTRAINTS if key in schema]
    for member in schema.get("anyOf", []):
        found += _constraints(member)
    return found


def fields_table(schema: dict[str, Any], service: str) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:
        return [f"{type_of(schema, service)}"]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | default | notes |", "|---|---|---|---|---|"]
    for name, prop in properties.items():
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        notes = "; ".join(
            [*_constraints(prop), *([prop["description"]] if "description" in prop else [])]
        )
        lines.append(
            f"| `{name}` | {_cell(type_of(prop, service))} | {'yes' if name in required else ''} "
            f"| {_cell(default)} | {_cell(notes)} |"
        )
    if schema.get("additionalProperties") is False:
        lines.append("")
        lines.append("Other fields are refused.")
    return lines


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield _ref_name(node["$ref"])
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def referenced_schemas(spec: dict[str, Any]) -> list[str]:
    """The component schemas the paths use, directly or through each other, in spec order."""
    components = spec.get("components", {}).get("schemas", {})
    seen: set[str] = set()
    todo = list(_refs(spec["paths"]))
    while todo:
        name = todo.pop()
        if name not in seen and name in components:
            seen.add(name)
            todo += list(_refs(components[name]))
    return [name for name in components if name in seen]


def _summary(text: str) -> str:
    return _cell(inspect.cleandoc(text).split("\n\n")[0]) if text else ""


def render_service(service: ServiceDoc, bento_service: Any, spec: dict[str, Any]) -> list[str]:
    out = [f"## {service.title} (`{spec['info']['title']}`)", "", service.intro, ""]
    out += [
        f"Runs as `bentoml serve {service.ref}`, locally on 127.0.0.1:{service.port} "
        f"(`{service.port_variable}`; `kb-platform services up {service.name}`). "
        f"Schema: [`docs/api/{service.name}.openapi.json`](api/{service.name}.openapi.json), "
        "the same as the running service's `GET /docs.json`"
        f"{'' if '/docs.json' in _open_paths(service) else ' (with the token)'}.",
        "",
    ]
    out += _auth(service)
    out += ["### Endpoints", "", "| method | path | what | auth |", "|---|---|---|---|"]
    open_paths = _open_paths(service)
    notes = probe_notes(service)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            auth = "none" if path in open_paths else _credential(service)
            what = notes.get(path) or _summary(operation.get("description", ""))
            out.append(f"| {method.upper()} | `{path}` | {_cell(what)} | {auth} |")
    for mount_path, routes in _mounted_routes(bento_service):
        for route_path, methods, doc in routes:
            out.append(
                f"| {', '.join(methods)} | `{mount_path}{route_path}` | {_summary(doc)} "
                f"(mounted beside BentoML's routes; not in the schema) | {_credential(service)} |"
            )
    out.append("")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            out += _operation(service, bento_service, path, method, operation)
    out += _limits(service)
    out += _errors(service)
    schemas = spec.get("components", {}).get("schemas", {})
    names = referenced_schemas(spec)
    if names:
        out += ["### Schemas", ""]
        for name in names:
            out += [f'<a id="{_anchor(service.name, name)}"></a>', "", f"#### {name}", ""]
            if schemas[name].get("description"):
                out += [_cell(schemas[name]["description"]), ""]
            out += [*fields_table(schemas[name], service.name), ""]
    return out


def probe_notes(service: ServiceDoc) -> dict[str, str]:
    """What the infrastructure routes mean for this service (BentoML's own descriptions are
    generic): the hooks each service class defines and its front door's handling."""
    if service.name == "rag":
        from kb_platform.serving.settings import ServingSettings

        cache = ServingSettings.model_fields["readiness_cache_s"].default
        return {
            "/livez": "200 unless the warm-up failed for good (`RagRuntime.is_alive`), then 503: "
            "restart the pod",
            "/healthz": "BentoML's alias of `/livez`",
            "/readyz": "200 once the text encoder and the answer model (and CLIP, when a "
            "checkpoint is there) are loaded and have run a real inference, and while the read "
            f"alias answers (checked live, cached {cache:g} s: `KB_SERVING_READINESS_CACHE_S`); "
            "503 otherwise. The reason is in the service's log, not in the body",
            "/metrics": "Prometheus text: `kb_serving_*`, served by the service's middleware",
        }
    return {
        "/livez": "200 as soon as the process serves",
        "/healthz": 'the startup probe, answered by the front door: 503 `{"warm": false}` '
        'until the models are loaded and have run a real inference, then 200 `{"warm": true}`',
        "/readyz": "503 until the warm-up finished without error (`EncoderRuntime.is_ready`), "
        "then 200",
        "/metrics": "Prometheus text: `kb_encoder_*` and BentoML's `bentoml_service_*`",
    }


def _open_paths(service: ServiceDoc) -> set[str]:
    if service.name == "rag":
        from kb_platform.serving.middleware import DOCS, PROBES
        from kb_platform.serving.settings import ServingSettings

        metrics_open = not ServingSettings.model_fields["metrics_require_key"].default
        return set(PROBES) | set(DOCS) | ({"/metrics"} if metrics_open else set())
    from kb_platform.encoder_service.front_door import OPEN, STARTUP_PROBE

    return set(OPEN) | {STARTUP_PROBE}


def _credential(service: ServiceDoc) -> str:
    return "API key" if service.name == "rag" else "token"


def _auth(service: ServiceDoc) -> list[str]:
    open_paths = ", ".join(f"`{p}`" for p in sorted(_open_paths(service)))
    if service.name == "rag":
        from kb_platform.serving.settings import ServingSettings

        metrics = (
            "`/metrics` needs a key too (`KB_SERVING_METRICS_REQUIRE_KEY`, default "
            f"`{ServingSettings.model_fields['metrics_require_key'].default}`)."
        )
        return [
            "### Authentication",
            "",
            f"Open without a key: {open_paths}. Every other route needs an API key, as "
            "`Authorization: Bearer <key>` or `X-API-Key: <key>`; without a valid one the answer "
            "is 401 with `WWW-Authenticate: Bearer`. The service stores only SHA-256 hashes of "
            'the keys (`KB_SERVING_API_KEYS_FILE`: a JSON list of `{"sha256", "name", '
            '"rate_per_s"?, "burst"?}` or one hash per line; or `KB_SERVING_API_KEYS`); '
            "`python -m kb_platform.serving.auth` makes a new key and its entry. Each key has a "
            "token bucket (its own `rate_per_s`/`burst`, else the defaults below): past it, 429 "
            f"with `Retry-After`. {metrics}",
            "",
            "Every response carries `X-Request-ID` (the caller's, when it is 1-64 of "
            "`A-Za-z0-9._:-`, else a new one); error bodies repeat it as `request_id`.",
            "",
        ]
    return [
        "### Authentication",
        "",
        f"Open without the token: {open_paths} (`/healthz` is the startup probe: 503 until the "
        "models are warm, then 200). Every other route needs the internal token as "
        "`Authorization: Bearer <token>` (the service reads it from `KB_ENCODER_TOKEN_FILE` or "
        "`KB_ENCODER_TOKEN`; callers from `KB_ENCODER_TOKEN`); without it the answer is 401. "
        "Model routes answer 503 with `Retry-After` while the models warm up.",
        "",
        "Every response to a checked route carries `X-Request-ID` (the caller's — a run's "
        "request id — or a new one).",
        "",
    ]


def _mounted_routes(bento_service: Any) -> list[tuple[str, list[tuple[str, list[str], str]]]]:
    mounted = []
    for app, path, _name in getattr(bento_service, "mount_apps", []):
        routes = []
        for route in getattr(app, "routes", []):
            methods = sorted(m for m in (route.methods or []) if m != "HEAD")
            routes.append((route.path, methods, inspect.getdoc(route.endpoint) or ""))
        mounted.append((path, routes))
    return mounted


def _operation(
    service: ServiceDoc, bento_service: Any, path: str, method: str, operation: dict[str, Any]
) -> list[str]:
    out = [f"### {method.upper()} {path}", ""]
    if operation.get("description"):
        out += [inspect.cleandoc(operation["description"]), ""]
    content = operation["requestBody"].get("content", {})
    for media_type, body in content.items():
        schema = body.get("schema", {})
        has_file = any(
            type_of(p, service.name) == "file" for p in schema.get("properties", {}).values()
        )
        accepted = f"`{media_type}`"
        if has_file:
            accepted = (
                "`application/json` (without the file field) or `multipart/form-data` (the file "
                "as a file part, the other fields as form fields, objects as JSON)"
            )
        elif media_type == "application/json":
            accepted = "`application/json`"
        out += [f"Request body, {accepted}:", "", *fields_table(schema, service.name), ""]
    api = _api_for(bento_service, path)
    streamed = api is not None and "StreamingResponse" in str(
        inspect.get_annotations(api.func).get("return", "")
    )
    ok = operation.get("responses", {}).get("200") or operation.get("responses", {}).get(200)
    if ok:
        for media_type, body in ok.get("content", {}).items():
            schema = body.get("schema", {})
            if streamed:
                from kb_platform.serving import sse

                out += [
                    f"Response 200, `{sse.MEDIA_TYPE}` (server-sent events; the schema below is "
                    "one event):",
                    "",
                    "```",
                    textwrap.dedent(inspect.getdoc(sse).split("\n\n")[1]),
                    "```",
                    "",
                ]
            else:
                out += [f"Response 200, `{media_type}`:", ""]
            out += [*fields_table(schema, service.name), ""]
    return out


def _api_for(bento_service: Any, path: str) -> Any:
    return next((api for api in bento_service.apis.values() if api.route == path), None)


def _limits(service: ServiceDoc) -> list[str]:
    out = [
        "### Limits",
        "",
        f"Settings of the service (environment, prefix `{service.settings_prefix}`), with their "
        "defaults:",
        "",
        "| variable | default | type |",
        "|---|---|---|",
    ]
    out += [f"| `{var}` | `{default}` | {kind} |" for var, default, kind in settings_rows(service)]
    return [*out, ""]


def _errors(service: ServiceDoc) -> list[str]:
    errors = raised_errors(service.error_sources)
    body = (
        '`{"error": "<what was wrong>", "code": "<code>", "request_id": "<id>"}`'
        if service.name == "rag"
        else '`{"error": "<what was wrong>", "code": "<reason>"}`'
    )
    out = [
        "### Errors",
        "",
        f"Refusals are JSON, {body}, with the status below. BentoML itself answers 400 "
        "(`InvalidArgument`: the body does not match the request schema), 404 and 500 "
        "(`InternalServerError`)"
        + (
            "; the RAG service's front door rewrites those in the same shape, with pydantic's "
            "errors as one `error` sentence (`kb_platform/serving/error_bodies.py`)"
            if service.name == "rag"
            else ""
        )
        + ". Found in the code (`{…}` stands for a value filled in):",
        "",
        "| status | code | message | Retry-After | raised in |",
        "|---|---|---|---|---|",
    ]
    for error in errors:
        phrase = http.HTTPStatus(error.status).phrase
        out.append(
            f"| {error.status} {phrase} | `{error.code}` | {_cell(error.message)} | "
            f"{'yes' if error.retry_after else ''} | `{error.where}` |"
        )
    return [*out, ""]


def render_markdown(loaded: list[tuple[ServiceDoc, Any, dict[str, Any]]]) -> str:
    out = [
        "# HTTP API",
        "",
        f"<!-- Generated by `{REGENERATE}` from the services' OpenAPI schemas and code; do not "
        "edit by hand. -->",
        "",
        "Two BentoML services. Their OpenAPI schemas, as each serves them at `GET /docs.json` "
        "(and as a Swagger page at `/`; the encoder's behind its token), are committed beside "
        "this file in `docs/api/`; this "
        "page is written from them and from the services' code (front doors, settings, "
        f"errors) by `{REGENERATE}`, and `kb_platform_tests/docs/test_api_docs.py` fails when "
        "either is out of date.",
        "",
        "| service | schema | base URL (local) | callers |",
        "|---|---|---|---|",
    ]
    callers = {
        "rag": "applications, `kb-platform ask`",
        "encoder": "ingestion runs (`text_embeddings`, `image_embeddings`)",
    }
    for service, _, spec in loaded:
        out.append(
            f"| [{service.title}](#{_slug(service.title, spec)}) | "
            f"[`{service.name}.openapi.json`](api/{service.name}.openapi.json) | "
            f"`http://127.0.0.1:{service.port}` | {callers.get(service.name, '')} |"
        )
    out += [
        "",
        "See [architecture.md](architecture.md) for where they sit and "
        "[troubleshooting.md](troubleshooting.md) for a service that never becomes ready.",
        "",
    ]
    for service, bento_service, spec in loaded:
        out += render_service(service, bento_service, spec)
    return "\n".join(out).rstrip() + "\n"


def _slug(title: str, spec: dict[str, Any]) -> str:
    heading = f"{title} ({spec['info']['title']})"
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def render() -> dict[str, str]:
    """Every generated file (its path under docs/) and its text."""
    _clean_environment()
    loaded = []
    files: dict[str, str] = {}
    for service in SERVICES:
        bento_service = load_service(service)
        spec = openapi_spec(bento_service)
        loaded.append((service, bento_service, spec))
        files[f"api/{service.name}.openapi.json"] = (
            json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
        )
    files["api.md"] = render_markdown(loaded)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a change")
    parser.add_argument(
        "--docs", type=Path, default=DOCS_DIR, help="the docs folder (default: the checkout's)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.docs / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(f"docs/{name}")
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; regenerate with `{REGENERATE}`", file=sys.stderr)
        return 1
    print(f"written: {', '.join(stale)}" if stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

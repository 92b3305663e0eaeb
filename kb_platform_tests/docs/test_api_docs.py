"""docs/api.md and docs/api/<service>.openapi.json are what `python -m kb_platform.api_docs`
makes from the services' OpenAPI schemas and code now: one run of the generator in --check mode
against a copy of the committed files in which one file was changed must name that file, and
only that one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kb_platform.api_docs import REGENERATE, SERVICES
from kb_platform.config import REPO_ROOT

DOCS = REPO_ROOT / "docs"
COMMITTED = ["api.md", *(f"api/{s.name}.openapi.json" for s in SERVICES)]
CHANGED = "api/rag.openapi.json"


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    copy = tmp_path_factory.mktemp("docs")
    for name in COMMITTED:
        source = DOCS / name
        assert source.is_file(), f"docs/{name} is missing: generate it with `{REGENERATE}`"
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, copy / name)
    spec = json.loads((copy / CHANGED).read_text())
    del spec["paths"]["/search"]  # an endpoint the service has, missing from the file
    (copy / CHANGED).write_text(json.dumps(spec, indent=2) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "kb_platform.api_docs", "--check", "--docs", str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    return result, copy


def test_the_committed_api_docs_are_up_to_date(checked: tuple) -> None:
    result, _ = checked
    stale = result.stderr.partition("out of date: ")[2].partition(";")[0].split(", ")
    others = [name for name in stale if name and name != f"docs/{CHANGED}"]
    assert not others, f"{', '.join(others)} out of date: regenerate with `{REGENERATE}`"


def test_a_changed_api_file_is_rejected_with_the_command_to_regenerate(checked: tuple) -> None:
    result, copy = checked
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"docs/{CHANGED}" in result.stderr
    assert REGENERATE in result.stderr
    assert (
        "/search" not in json.loads((copy / CHANGED).read_text())["paths"]
    )  # --check wrote nothing


def test_the_schemas_hold_every_endpoint_of_the_services() -> None:
    rag = json.loads((DOCS / "api" / "rag.openapi.json").read_text())
    encoder = json.loads((DOCS / "api" / "encoder.openapi.json").read_text())
    assert {"/search", "/ask", "/ask/stream", "/readyz", "/livez"} <= set(rag["paths"])
    assert {"/embed_texts", "/embed_clip", "/model", "/healthz"} <= set(encoder["paths"])
    page = (DOCS / "api.md").read_text()
    for path in ("/search", "/ask", "/ask/stream", "/embed_texts", "/embed_clip"):
        assert f"### POST {path}\n" in page
    assert "`/images/{key:path}`" in page  # mounted beside BentoML's routes
    assert "| 401 Unauthorized | `unauthorized` |" in page
    assert "| 401 Unauthorized | `token` |" in page

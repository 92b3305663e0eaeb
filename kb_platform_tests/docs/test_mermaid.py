"""Every Mermaid diagram of the docs parses with the real Mermaid library (npm, pinned in
deploy/docs/package.json), run by deploy/docs/mermaid.sh under Node.js; and a broken one is
rejected with Mermaid's own parse error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kb_platform.config import REPO_ROOT
from kb_platform_tests.docs.markdown import DOCS, doc_files, fenced_blocks

SCRIPT = REPO_ROOT / "deploy" / "docs" / "mermaid.sh"


@pytest.fixture(scope="module")
def mermaid_installed() -> None:
    found = subprocess.run(["bash", str(SCRIPT), "dir"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(
            "Mermaid is not installed: `bash deploy/docs/mermaid.sh install` "
            f"(deploy/local/setup.sh runs it). {found.stderr.strip()}"
        )


def check(*files: Path) -> tuple[int, list[dict]]:
    result = subprocess.run(
        ["bash", str(SCRIPT), "check", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, lines


def test_every_mermaid_block_of_the_docs_parses(mermaid_installed: None) -> None:
    files = doc_files()
    expected = {
        (str(f), b.line) for f in files for b in fenced_blocks(f.read_text()) if b.lang == "mermaid"
    }
    code, results = check(*files)
    failures = [f"{r['file']}:{r['line']}: {r['error']}" for r in results if not r["ok"]]
    assert not failures, "Mermaid could not parse:\n" + "\n\n".join(failures)
    assert code == 0
    # the checker saw exactly the blocks this test finds (a fence it skipped would go unchecked)
    assert {(r["file"], r["line"]) for r in results} == expected
    architecture = [r for r in results if r["file"] == str(DOCS / "architecture.md")]
    assert len(architecture) >= 4
    assert {"flowchart-v2", "stateDiagram"} <= {r["diagramType"] for r in architecture}


def test_a_broken_diagram_is_rejected(mermaid_installed: None, tmp_path: Path) -> None:
    # The architecture's first diagram, once as it is and once with an arrow left dangling.
    first = next(
        b for b in fenced_blocks((DOCS / "architecture.md").read_text()) if b.lang == "mermaid"
    )
    broken_arrow = first.text + "\n  S -->"
    doc = tmp_path / "broken.md"
    doc.write_text(
        "# Diagrams\n\n"
        f"```mermaid\n{first.text}\n```\n\n"
        f"```mermaid\n{broken_arrow}\n```\n\n"
        "```mermaid\nflowchart LR\n  A[unclosed --> B\n```\n\n"
        "```mermaid\nflowchar LR\n  A --> B\n```\n\n"
        "- in a list:\n\n  ```mermaid\n  sequenceDiagram\n    A->>: no receiver\n  ```\n\n"
        "```mermaid\nstateDiagram-v2\n  [*] --> never_closed\n"
    )
    code, results = check(doc)
    assert code == 1
    assert [r["ok"] for r in results] == [True, False, False, False, False, False]
    assert "Parse error" in results[1]["error"]
    assert "Parse error" in results[2]["error"]
    assert "No diagram type detected" in results[3]["error"]
    assert "Parse error" in results[4]["error"]
    assert "never closed" in results[5]["error"]

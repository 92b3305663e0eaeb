"""Static security scan: bandit at medium severity and above finds nothing in kb_platform/ and
bentos/ (the gate of ci.yml's security job), and the scan is shown rejecting code that does what
it must catch. A finding that was reviewed as a false positive carries ``# nosec BXXX # why`` on
its line (docs/security.md lists them): never a blanket ``# nosec``, never one without a reason."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path
from typing import Any

import pytest

from kb_platform.config import REPO_ROOT

SCANNED = ("kb_platform", "bentos")  # what ci.yml's bandit step scans
# a reviewed exception: the test ids it silences, then after a second '#' why it is safe
NOSEC = re.compile(r"#\s*nosec\b(?P<rest>.*)$")
REVIEWED = re.compile(r"^\s+B\d{3}(?:\s*,\s*B\d{3})*\s+#\s*\S.{4,}$")

BAD = """\
import subprocess
import urllib.request

import yaml
from transformers import AutoModel


def run(command: str) -> None:
    subprocess.run(command, shell=True)


def settings(document: str) -> object:
    return yaml.load(document)


def fetch(url: str) -> bytes:
    return urllib.request.urlopen(url).read()


def model(name: str) -> object:
    return AutoModel.from_pretrained(name)


def reviewed(text: str) -> object:
    return yaml.load(text, Loader=yaml.Loader)  # nosec B506 # our own file, written by us


def wrong_id(text: str) -> object:
    return yaml.load(text)  # nosec B615 # names another test: B506 still reported
"""


def bandit(*targets: str | Path, cwd: Path = REPO_ROOT) -> dict[str, Any]:
    """bandit's JSON report at medium severity and above (ci.yml's ``-ll``)."""
    if importlib.util.find_spec("bandit") is None:
        pytest.fail(
            "bandit is not installed: it is a dev dependency (pyproject.toml, "
            "uv pip install -e '.[dev]')"
        )
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "bandit.json"
        command = [sys.executable, "-m", "bandit", "--recursive", *map(str, targets), "-ll"]
        result = subprocess.run(
            [*command, "--quiet", "--format", "json", "--output", str(output)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode in (0, 1), result.stderr  # 1: findings; else: broken
        report = json.loads(output.read_text(encoding="utf-8"))
    assert report["errors"] == [], report["errors"]  # every file parsed
    return report


def findings(report: dict[str, Any]) -> list[str]:
    return [
        f"{r['filename']}:{r['line_number']} {r['test_id']} "
        f"({r['issue_severity']}/{r['issue_confidence']}) {r['issue_text']}"
        for r in report["results"]
    ]


def nosec_comments(root: Path) -> list[tuple[str, str]]:
    """(file:line, text after ``nosec``) of every nosec comment in the scanned folders (comment
    tokens, as bandit reads them: not a string that mentions one)."""
    found = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            with path.open("rb") as source:
                for token in tokenize.tokenize(source.readline):
                    match = NOSEC.search(token.string) if token.type == tokenize.COMMENT else None
                    if match:
                        where = f"{path.relative_to(root)}:{token.start[0]}"
                        found.append((where, match.group("rest")))
    return found


def test_bandit_finds_nothing_at_medium_severity_in_the_code_and_the_bentos() -> None:
    report = bandit(*SCANNED)
    assert findings(report) == []
    scanned = report["metrics"]["_totals"]["loc"]
    assert scanned > 10_000, f"only {scanned} lines scanned"  # the tree, not an empty folder


def test_bandit_flags_a_deliberately_bad_module(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    flagged = {(r["test_id"], r["line_number"]) for r in bandit("bad.py", cwd=tmp_path)["results"]}
    lines = BAD.splitlines()

    def line(fragment: str) -> int:
        (number,) = [n for n, text in enumerate(lines, 1) if fragment in text]
        return number

    assert flagged == {
        ("B602", line("shell=True")),  # high: shell injection
        ("B506", line("yaml.load(document)")),  # medium: runs any constructor
        ("B310", line("urlopen(url)")),  # medium: file:// and custom schemes too
        ("B615", line("from_pretrained(name)")),  # medium: an unpinned hub download
        ("B506", line("names another test")),  # a nosec for another test silences nothing
    }  # and the reviewed yaml.load with its own nosec B506 is not among them


def test_every_nosec_names_its_tests_and_says_why() -> None:
    bare = [
        f"{where}: nosec{rest}"
        for where, rest in nosec_comments(REPO_ROOT)
        if not REVIEWED.match(rest)
    ]
    assert bare == []


def test_a_blanket_or_unexplained_nosec_is_found(tmp_path: Path) -> None:
    folder = tmp_path / "kb_platform"
    folder.mkdir()
    (tmp_path / "bentos").mkdir()
    (folder / "m.py").write_text(
        "import yaml\n"
        "a = yaml.load(x)  # nosec\n"
        "b = yaml.load(x)  # nosec B506\n"
        "c = yaml.load(x)  # nosec B506 # our own file, written by us\n"
    )
    unexplained = [where for where, rest in nosec_comments(tmp_path) if not REVIEWED.match(rest)]
    assert unexplained == ["kb_platform/m.py:2", "kb_platform/m.py:3"]

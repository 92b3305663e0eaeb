"""The GitHub Actions workflows (.github/workflows): actionlint passes on them (shellcheck on
their run scripts) and rejects broken ones; what the delivery path relies on in each workflow
(docs/delivery.md); and .github/scripts/bump_image_tag.py, the GitOps tag writer, with its
refusals. GitHub is not reachable from here: the workflows are validated, never run."""

from __future__ import annotations

import ast
import glob
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kb_platform.config import REPO_ROOT
from kb_platform_tests.deploy.kube_cluster import tool_path

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
BUMP = REPO_ROOT / ".github" / "scripts" / "bump_image_tag.py"
DOCKERFILE = REPO_ROOT / "deploy" / "images" / "Dockerfile"
ENVIRONMENTS = REPO_ROOT / "deploy" / "cluster" / "gitops" / "environments"
STAGING_FILE = "deploy/cluster/gitops/environments/staging/images.yaml"
PRODUCTION_FILE = "deploy/cluster/gitops/environments/production/images.yaml"
# the format of an environment's images.yaml (deploy/cluster/gitops/environments/<env>/)
IMAGES_YAML = (
    "# The image tag this environment runs: .github/workflows/release.yml writes staging's,"
    " promotion (promote.yml) copies it to production.\n"
    "kb-platform:\n"
    "  image:\n"
    '    tag: "0.1.0"\n'
)


# --- helpers ------------------------------------------------------------------------------------


def shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.fail(
            "shellcheck not found: actionlint checks the workflows' run scripts with it "
            "(Debian package shellcheck; deploy/local/setup.sh installs it)"
        )
    return path


def actionlint(*files: Path) -> list[dict[str, Any]]:
    """actionlint's errors for the files, as dicts (kind, message, filepath, line, ...)."""
    result = subprocess.run(
        [
            str(tool_path("actionlint")),
            "-no-color",
            "-format",
            "{{json .}}",
            f"-shellcheck={shellcheck()}",
            "-pyflakes=",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode not in (0, 1):  # 1: errors found; anything else: actionlint failed
        raise AssertionError(f"actionlint failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout or "[]")


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    return {on: None} if isinstance(on, str) else dict(on)


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The job's steps that use ``action`` (owner/name, any version)."""
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def scripts(job: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def dockerfile_targets() -> set[str]:
    """The Dockerfile's image stages: those that say what runs (CMD or ENTRYPOINT)."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    bodies = dict(zip(parts[1::2], parts[2::2], strict=True))
    return {name for name, body in bodies.items() if re.search(r"^(CMD|ENTRYPOINT)\b", body, re.M)}


def dockerfile_base_image() -> str:
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "deploy/images/Dockerfile has no ARG BASE_IMAGE=<default>"
    return match[1]


def bump(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The script as the runner runs it; -I -S: no site-packages, so only the standard library."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(BUMP), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- actionlint -----------------------------------------------------------------------------------


@pytest.mark.kube
def test_actionlint_passes_on_the_workflows() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "integration.yml", "release.yml", "promote.yml"}
    errors = actionlint(*files)
    assert errors == [], "\n".join(
        f"{e['filepath']}:{e['line']}: {e['message']} [{e['kind']}]" for e in errors
    )


VALID = """\
name: sample
on:
  push:
jobs:
  build:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    permissions:
      id-token: write
    strategy:
      matrix:
        target: [platform, rag]
    steps:
      - uses: actions/checkout@v6
        with:
          fetch-depth: 1
      - run: echo "${{ matrix.target }}" "$HOME"
  test:
    needs: [build]
    runs-on: ubuntu-24.04
    steps:
      - run: echo finished
"""

BROKEN = {
    "unknown key": (
        ("timeout-minutes: 5", "timeout_minutes: 5"),
        "syntax-check",
        'unexpected key "timeout_minutes" for "job" section',
    ),
    "bad needs": (
        ("needs: [build]", "needs: [biuld]"),
        "job-needs",
        'job "test" needs job "biuld" which does not exist in this workflow',
    ),
    "undefined matrix value": (
        ("${{ matrix.target }}", "${{ matrix.arch }}"),
        "expression",
        'property "arch" is not defined in object type {target: string}',
    ),
    "unknown input to actions/checkout": (
        ("fetch-depth: 1", "fetch-deep: 1"),
        "action",
        'input "fetch-deep" is not defined in action "actions/checkout@v6"',
    ),
    "invalid permission": (
        ("id-token: write", "id-token: writ"),
        "permissions",
        '"writ" is invalid as permission of scope "id-token"',
    ),
    "unquoted expansion (shellcheck)": (
        ('"$HOME"', "$HOME"),
        "shellcheck",
        "SC2086",
    ),
}


@pytest.mark.kube
def test_actionlint_accepts_the_sample_workflow(tmp_path: Path) -> None:
    path = tmp_path / "sample.yml"
    path.write_text(VALID)
    assert actionlint(path) == []


@pytest.mark.kube
@pytest.mark.parametrize("case", BROKEN)
def test_actionlint_rejects_a_broken_workflow(tmp_path: Path, case: str) -> None:
    (old, new), kind, message = BROKEN[case]
    assert VALID.count(old) == 1
    path = tmp_path / "broken.yml"
    path.write_text(VALID.replace(old, new))
    errors = actionlint(path)
    assert [(e["kind"], message in e["message"]) for e in errors] == [(kind, True)], errors


# --- what each workflow must do -------------------------------------------------------------------


def test_ci_lints_scans_and_runs_the_unit_tests_on_every_push() -> None:
    wf = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(wf))
    jobs = wf["jobs"]
    lint = scripts(jobs["lint"])
    assert re.search(r"ruff@\S+\" check", lint) and re.search(r"ruff@\S+\" format --check", lint)
    assert "tools.sh path actionlint" in lint and "-shellcheck=" in lint
    security = [s["run"] for s in steps(jobs["security"]) if "bandit" in s.get("run", "")]
    # gating at medium severity and above
    assert any(
        " -ll " in r and "--exit-zero" not in r and "kb_platform bentos" in r for r in security
    ), security
    assert not any("--exit-zero" in r for r in security), security
    unit = jobs["unit"]
    assert "pytest kb_platform_tests/unit" in scripts(unit)
    (uv,) = using(unit, "astral-sh/setup-uv")
    assert uv["with"]["enable-cache"] is True
    assert "pyproject.toml" in uv["with"]["cache-dependency-glob"]
    assert "uv pip install" in scripts(unit) and "-e '.[dev]'" in scripts(unit)


# conftest.py's fixtures that start services, and the markers of tests that need them
SERVICE_FIXTURES = {
    "kafka",
    "es",
    "kafka_service",
    "elasticsearch_service",
    "postgres_service",
    "kube_cluster",
}
SERVICE_MARKERS = {"services", "kube", "images"}


def service_requests(source: str) -> list[str]:
    """The functions of a test module that ask for a service fixture, and service markers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            wanted = {a.arg for a in node.args.args} & SERVICE_FIXTURES
            if wanted:
                found.append(f"{node.name} {sorted(wanted)}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in SERVICE_MARKERS
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark"
        ):
            found.append(f"pytest.mark.{node.attr}")
    return found


def test_unit_tests_need_no_services() -> None:
    """ci.yml runs kb_platform_tests/unit with no services: none asks for one."""
    offenders = {
        path.name: service_requests(path.read_text())
        for path in sorted((REPO_ROOT / "kb_platform_tests" / "unit").glob("test_*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_a_unit_test_asking_for_a_service_is_found() -> None:
    source = (
        "import pytest\n"
        "def test_a(es, tmp_path): ...\n"
        "@pytest.mark.services\n"
        "def test_b(tmp_path): ...\n"
    )
    assert service_requests(source) == ["test_a ['es']", "pytest.mark.services"]


def test_integration_runs_the_whole_suite_on_pull_requests_with_caches() -> None:
    wf = workflow("integration.yml")
    assert set(triggers(wf)) == {"pull_request", "workflow_dispatch"}
    assert wf["concurrency"]["cancel-in-progress"] is True
    assert "pull_request.number" in wf["concurrency"]["group"]
    (job,) = wf["jobs"].values()
    assert job["timeout-minutes"] == 90
    assert ".ci/run" in scripts(job)
    (uv,) = using(job, "astral-sh/setup-uv")
    assert uv["with"]["enable-cache"] is True
    assert "pyproject.toml" in uv["with"]["cache-dependency-glob"]
    caches = {s["with"]["path"]: s["with"]["key"] for s in using(job, "actions/cache")}
    maven = next(key for path, key in caches.items() if "~/.m2/repository" in path)
    assert "pom.xml" in maven
    maven_paths = next(path for path in caches if "~/.m2/repository" in path)
    # what deploy/local/{kafka,elasticsearch} assemble from Maven, under KB_CACHE_DIR
    for folder in ("kafka-*", "jmx-exporter-*", "elasticsearch-*"):
        assert f"~/.cache/kb-platform/{folder}" in maven_paths
    tools = caches["~/.cache/kb-platform/tools"]
    assert "deploy/cluster/tools.versions" in tools and "deploy/cluster/crds.versions" in tools
    (go,) = using(job, "actions/setup-go")
    assert go["with"]["cache"] is False


def unmatched_hash_patterns(wf: dict[str, Any]) -> list[str]:
    """The hashFiles patterns of a workflow's jobs that match no file of the checkout, seen from
    where each job checks the repository out (its workspace, or the checkout step's path)."""
    unmatched = []
    for name, job in wf["jobs"].items():
        own = [s for s in using(job, "actions/checkout") if "repository" not in s.get("with", {})]
        path = own[0].get("with", {}).get("path") if own else None
        prefix = f"{path}/" if path else ""
        for args in re.findall(r"hashFiles\(([^)]*)\)", json.dumps(job)):
            for pattern in re.findall(r"'([^']+)'", args):
                if not (
                    pattern.startswith(prefix)
                    and glob.glob(str(REPO_ROOT / pattern.removeprefix(prefix)), recursive=True)
                ):
                    unmatched.append(f"{name}: {pattern}")
    return unmatched


def test_every_cache_key_hashes_files_that_exist() -> None:
    """hashFiles of a path that matches nothing is empty: the key would never change."""
    found = {p.name: unmatched_hash_patterns(workflow(p.name)) for p in WORKFLOWS.glob("*.yml")}
    assert {name: patterns for name, patterns in found.items() if patterns} == {}


def test_a_cache_key_hashing_nothing_is_found() -> None:
    key = "tools-${{ hashFiles('%s', 'kb-platform/pyproject.toml') }}"
    cache = {"uses": "actions/cache@v5", "with": {"key": key % "deploy/cluster/tools.versions"}}
    wf = {
        "jobs": {
            "root": {"steps": [{"uses": "actions/checkout@v6"}, cache]},
            "nested": {
                "steps": [
                    {"uses": "actions/checkout@v6", "with": {"path": "kb-platform"}},
                    {**cache, "with": {"key": key % "kb-platform/deploy/cluster/tools.version"}},
                ]
            },
        }
    }
    assert unmatched_hash_patterns(wf) == [
        "root: kb-platform/pyproject.toml",  # this job's checkout is the workspace itself
        "nested: kb-platform/deploy/cluster/tools.version",  # no such file
    ]


def release_images_job() -> dict[str, Any]:
    return workflow("release.yml")["jobs"]["images"]


def test_release_builds_both_platforms_of_every_image_from_the_pinned_base() -> None:
    wf = workflow("release.yml")
    on = triggers(wf)
    assert on["push"] == {"tags": ["v*"]} and "workflow_dispatch" in on
    job = release_images_job()
    assert using(job, "docker/setup-qemu-action") and using(job, "docker/setup-buildx-action")
    (login,) = using(job, "docker/login-action")
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    (build,) = using(job, "docker/build-push-action")
    options = build["with"]
    assert set(options["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert options["push"] is True
    assert options["file"] == "deploy/images/Dockerfile"
    assert options["target"] == "${{ matrix.target }}"
    assert options["build-args"] == "BASE_IMAGE=${{ needs.meta.outputs.base-image }}"
    # the release's base is the Dockerfile's, resolved to a digest once for all images
    assert wf["env"]["BASE_IMAGE"] == dockerfile_base_image()
    assert "imagetools inspect" in scripts(wf["jobs"]["meta"])
    matrix = job["strategy"]["matrix"]["include"]
    assert (
        {m["target"] for m in matrix}
        == dockerfile_targets()
        == {
            "platform",
            "encoder",
            "rag",
            "training",
        }
    )
    chart = yaml.safe_load((REPO_ROOT / "deploy/helm/kb-platform/values.yaml").read_text())
    assert {m["target"]: m["image"] for m in matrix} == chart["image"]["names"]
    # the pushed index is checked for both platforms, whose digests the SBOM steps use
    (platforms,) = [s for s in steps(job) if s.get("id") == "platforms"]
    assert "for arch in amd64 arm64; do" in platforms["run"]


def test_release_scans_the_sbom_then_signs_keylessly_and_attests() -> None:
    job = release_images_job()
    assert job["permissions"]["id-token"] == "write"
    assert job["permissions"]["packages"] == "write"
    names = [s.get("uses", "").split("@")[0] or s.get("run", "") for s in steps(job)]
    sboms = using(job, "anchore/sbom-action")
    scans = using(job, "anchore/scan-action")
    assert len(sboms) == len(scans) == 2  # one per platform
    for sbom, scan in zip(sboms, scans, strict=True):
        assert sbom["with"]["format"] in {"spdx-json", "cyclonedx-json"}
        assert sbom["with"]["image"].startswith("${{ env.IMAGE }}@${{ steps.platforms.outputs.")
        assert scan["with"]["sbom"] == sbom["with"]["output-file"]
        assert scan["with"]["severity-cutoff"] == "critical"
        assert scan["with"]["fail-build"] is True
    assert using(job, "sigstore/cosign-installer")
    (sign,) = [s for s in steps(job) if "cosign sign" in s.get("run", "")]
    assert re.search(r'cosign sign --yes (--recursive )?"\$IMAGE@\$DIGEST"', sign["run"])
    assert sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert "--key" not in sign["run"]  # keyless: the workflow's OIDC identity
    (attest,) = [s for s in steps(job) if "cosign attest" in s.get("run", "")]
    for sbom in sboms:
        predicate = sbom["with"]["output-file"].replace("${{ matrix.image }}", "$NAME")
        assert f'--predicate "{predicate}"' in attest["run"]
    # nothing is signed before every scan passed
    last_scan = max(i for i, s in enumerate(steps(job)) if s in scans)
    assert last_scan < steps(job).index(sign) < steps(job).index(attest), names


def test_release_then_writes_stagings_tag() -> None:
    job = workflow("release.yml")["jobs"]["staging"]
    assert set(job["needs"]) == {"meta", "images"}
    assert job["permissions"] == {"contents": "write"}
    assert job["env"]["FILE"] == STAGING_FILE
    assert job["env"]["TAG"] == "${{ needs.meta.outputs.tag }}"
    assert 'bump_image_tag.py set "$FILE" "$TAG"' in scripts(job)
    assert 'git push --quiet origin "HEAD:$BRANCH"' in scripts(job)


def test_promote_copies_stagings_signed_tag_to_production_in_a_pull_request() -> None:
    wf = workflow("promote.yml")
    assert set(triggers(wf)) == {"workflow_dispatch"}
    (job,) = wf["jobs"].values()
    assert job["env"]["STAGING"] == STAGING_FILE and job["env"]["PRODUCTION"] == PRODUCTION_FILE
    run = scripts(job)
    assert 'bump_image_tag.py get "$STAGING"' in run
    assert 'bump_image_tag.py set "$PRODUCTION" "$TAG"' in run
    assert "gh pr create" in run and 'git push --quiet --force origin "$branch"' in run
    # the images it verifies are the ones release.yml signs
    released = {m["image"] for m in release_images_job()["strategy"]["matrix"]["include"]}
    verified = re.search(r"for image in ([^;]+);", run)
    assert verified and set(verified[1].split()) == released
    (verify,) = [s for s in steps(job) if "cosign verify" in s.get("run", "")]
    assert "--certificate-identity-regexp" in verify["run"]
    assert verify["env"]["IDENTITY"].endswith("/\\.github/workflows/release\\.yml@refs/")


def unpinned_actions(text: str) -> list[str]:
    """``uses:`` lines of other owners than actions/ and docker/ (by major version: actionlint
    checks their inputs) that are not pinned by a full commit SHA with the version beside it."""
    unpinned = []
    for line in text.splitlines():
        match = re.search(r"uses:\s*([\w.-]+)/[\w./-]+@(\S+)", line)
        if match is None or match[1] in {"actions", "docker"}:
            continue
        if not (re.fullmatch(r"[0-9a-f]{40}", match[2]) and re.search(r"# v\d", line)):
            unpinned.append(line.strip())
    return unpinned


def test_third_party_actions_are_pinned_by_commit() -> None:
    found = {p.name: unpinned_actions(p.read_text()) for p in WORKFLOWS.glob("*.yml")}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_an_action_pinned_by_tag_is_found() -> None:
    text = (
        "      - uses: actions/checkout@v6\n"
        "      - uses: anchore/scan-action@v7\n"
        "      - uses: sigstore/cosign-installer@6f9f17788090df1f26f669e9d70d6ae9567deba6\n"
        "      - uses: astral-sh/setup-uv@20cfd1bf945f4377ade1205e4dbc17946fc9a30d # v10.0.1\n"
    )
    assert unpinned_actions(text) == [
        "- uses: anchore/scan-action@v7",
        "- uses: sigstore/cosign-installer@6f9f17788090df1f26f669e9d70d6ae9567deba6",
    ]


def test_the_environments_image_files_are_what_the_workflows_write() -> None:
    for relative in (STAGING_FILE, PRODUCTION_FILE):
        path = REPO_ROOT / relative
        assert path.is_file(), f"{relative} is missing (deploy/cluster/gitops)"
        result = bump("get", path)
        assert result.returncode == 0, result.stderr


# --- bump_image_tag.py ----------------------------------------------------------------------------


@pytest.fixture
def images_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "images.yaml"
    path.write_text(IMAGES_YAML)
    return path


def test_bump_rewrites_only_the_tag(images_yaml: Path) -> None:
    result = bump("set", images_yaml, "1.4.0-rc.1")
    assert result.returncode == 0, result.stderr
    assert images_yaml.read_text() == IMAGES_YAML.replace('"0.1.0"', '"1.4.0-rc.1"')
    assert bump("get", images_yaml).stdout == "1.4.0-rc.1\n"
    assert yaml.safe_load(images_yaml.read_text()) == {
        "kb-platform": {"image": {"tag": "1.4.0-rc.1"}}
    }


def test_bump_keeps_comments_quotes_and_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    original = "# head\r\nkb-platform:\r\n  image:\r\n    tag: 0.1.0   # pinned by release\r\n"
    path.write_bytes(original.encode())
    assert bump("get", path).stdout == "0.1.0\n"
    assert bump("set", path, "sha-0123456789ab").returncode == 0
    assert (
        path.read_bytes()
        == original.replace("tag: 0.1.0   #", 'tag: "sha-0123456789ab"   #').encode()
    )
    path.write_text("kb-platform:\n  image:\n    tag: 'v2'\n")
    assert bump("get", path).stdout == "v2\n"


def test_bump_of_the_same_tag_leaves_the_file_alone(images_yaml: Path) -> None:
    before = images_yaml.stat().st_mtime_ns
    result = bump("set", images_yaml, "0.1.0")
    assert result.returncode == 0 and "unchanged" in result.stderr
    assert images_yaml.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "tag", ["0.1.0", "v1.2.3", "sha-0123456789ab", "_x", "A" * 128, "1.0-rc_1"]
)
def test_valid_oci_tags_are_accepted(tag: str) -> None:
    assert bump("check", tag).returncode == 0


@pytest.mark.parametrize(
    "tag", ["", "-1.0", ".hidden", "A" * 129, "has space", "v1/2", "1.0:latest", "é", "1.0\n"]
)
def test_invalid_oci_tags_are_refused(images_yaml: Path, tag: str) -> None:
    assert bump("check", tag).returncode == 2
    result = bump("set", images_yaml, tag)
    assert result.returncode == 2
    assert "is not a valid OCI tag" in result.stderr
    assert images_yaml.read_text() == IMAGES_YAML


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("kb-platform:\n  image:\n    repository: kb\n", "found 0"),
        ("# tag: 0.1.0 is a comment, not a tag line\nkb-platform: {}\n", "found 0"),
        (
            'kb-platform:\n  image:\n    tag: "0.1.0"\nkb-rag:\n  image:\n    tag: "0.1.0"\n',
            "found 2",
        ),
    ],
)
def test_a_file_without_exactly_one_tag_line_is_refused(
    tmp_path: Path, text: str, found: str
) -> None:
    path = tmp_path / "images.yaml"
    path.write_text(text)
    for args in (("get", path), ("set", path, "1.0.0")):
        result = bump(*args)
        assert result.returncode == 2
        assert f"expected exactly one tag line, {found}" in result.stderr
    assert path.read_text() == text


def test_an_invalid_tag_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    path.write_text('kb-platform:\n  image:\n    tag: "not valid"\n')
    result = bump("get", path)
    assert result.returncode == 2 and "is not a valid OCI tag" in result.stderr
    path.write_text('kb-platform:\n  image:\n    tag: "0.1.0" extra\n')
    result = bump("get", path)
    assert result.returncode == 2 and "cannot read the tag line" in result.stderr


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    result = bump("set", tmp_path / "absent.yaml", "1.0.0")
    assert result.returncode == 2 and "cannot read" in result.stderr

"""The Docker users' stack and the images: deploy/compose/docker-compose.yml loaded by the
compose-spec loader (what `docker compose config` runs) with each of its references checked,
the Dockerfile linted by hadolint, each validator shown rejecting a broken case; and (marked
`images`, minutes each) the platform image built with podman from a debootstrap base, its code
importable inside it as the non-root user without a network."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kb_platform.config import REPO_ROOT

pytestmark = pytest.mark.kube

COMPOSE = REPO_ROOT / "deploy" / "compose"
DOCKERFILE = REPO_ROOT / "deploy" / "images" / "Dockerfile"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"


def compose_config(
    folder: Path, compose_file: Path | None = None, env: bool = True
) -> subprocess.CompletedProcess[str]:
    args = ["bash", str(COMPOSE / "validate.sh")]
    if env:
        env_file = folder / "compose.env"
        env_file.write_text("KB_PG_PASSWORD=test-password\nKB_ENCODER_TOKEN=test-token\n")
        args += ["-env-file", str(env_file)]
    args.append(str(compose_file or COMPOSE / "docker-compose.yml"))
    return subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)


def test_the_compose_stack_loads_and_refers_to_what_exists(tmp_path: Path) -> None:
    result = compose_config(tmp_path)
    assert result.returncode == 0, result.stderr
    project = yaml.safe_load(result.stdout)
    services = project["services"]
    assert {
        "kafka",
        "elasticsearch",
        "postgres",
        "user-code",
        "dagster-webserver",
        "dagster-daemon",
        "encoder",
        "rag",
        "exporter",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    targets = set(re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE.read_text(), re.MULTILINE))
    for name, service in services.items():
        if build := service.get("build"):
            assert Path(build["context"], build["dockerfile"]).resolve() == DOCKERFILE, name
            assert build["target"] in targets, name
        for volume in service.get("volumes", []):
            source = volume.get("source", "")
            if volume["type"] == "bind" and "/secrets/" not in source:  # secrets.sh makes those
                assert Path(source).exists(), (name, source)
    grafana = {
        v["target"]: v["source"] for v in services["grafana"]["volumes"] if v["type"] == "bind"
    }
    provisioning = Path(grafana["/etc/grafana/provisioning"])
    assert (provisioning / "datasources" / "prometheus.yml").exists()
    provider = yaml.safe_load((provisioning / "dashboards" / "kb-platform.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert Path(grafana[dashboards_path]) == REPO_ROOT / "deploy" / "grafana" / "dashboards"
    assert services["grafana"]["environment"]["KB_PROMETHEUS_URL"] == "http://prometheus:9090"
    # the rules Prometheus loads are the ones promtool tests
    prometheus = {
        v["target"]: v["source"] for v in services["prometheus"]["volumes"] if v["type"] == "bind"
    }
    assert (
        Path(prometheus["/etc/prometheus/rules"]) == REPO_ROOT / "deploy" / "prometheus" / "rules"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["services"]["rag"].update(
                depends_on={"no-such-service": {"condition": "service_started"}}
            ),
            "no-such-service",
        ),
        (lambda c: c["services"]["rag"].update(restarts="always"), "restarts"),
        (lambda c: c["services"]["encoder"].update(ports=[{"target": "not-a-port"}]), "target"),
    ],
)
def test_the_loader_rejects_a_broken_stack(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    config = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    change(config)
    broken = COMPOSE / f".broken-{tmp_path.name}.yml"  # beside the original: relative paths hold
    try:
        broken.write_text(yaml.safe_dump(config))
        result = compose_config(tmp_path, broken)
    finally:
        broken.unlink()
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_stack_will_not_start_without_its_secrets(tmp_path: Path) -> None:
    result = compose_config(tmp_path, env=False)
    assert result.returncode != 0 and "run deploy/compose/secrets.sh first" in result.stderr


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM debian:latest\nRUN apt-get install python3\nCMD python3\n")
    result = subprocess.run(
        [str(HADOLINT), str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3014", "DL3025"):  # latest tag, apt-get without -y, shell-form CMD
        assert rule in result.stdout, result.stdout


@pytest.mark.images
@pytest.mark.timeout(3600)  # a cold build takes 10-13 minutes on 2 cores
def test_the_platform_image_builds_and_imports_its_code_as_a_non_root_user() -> None:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (deploy/local/setup.sh installs it)")
    build = REPO_ROOT / "deploy" / "images" / "build.sh"
    built = subprocess.run(
        ["bash", str(build), "build", "platform"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    print(built.stderr.strip().splitlines()[-1])  # the build's time and the image's size
    check = (
        "import os, shutil, kb_platform.definitions as d; "
        "jobs = d.defs.resolve_all_job_defs(); "
        "print(os.getuid(), shutil.which('tesseract') is not None, len(jobs))"
    )
    ran = subprocess.run(
        ["bash", str(build), "run", "platform", "0.1.0", "--", "python", "-c", check],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-4000:]
    uid, tesseract, jobs = ran.stdout.split()[-3:]
    assert uid == "10001" and tesseract == "True" and int(jobs) > 0

"""The local service scripts: idempotent start, clean stop, clear errors naming the log file.

A second PostgreSQL (the quickest of the servers to start) and a second Kafka run in their own
state folders on their own ports, so the shared stack is not disturbed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from kb_platform.config import REPO_ROOT
from kb_platform_tests.ports import free_port

SCRIPTS = REPO_ROOT / "deploy" / "local"


def _script(service: str, action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / service / f"{service}.sh"), action],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _pids_of(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return found.split()


def test_start_twice_is_harmless_and_stop_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    # pytest's tmp folders are root-only: the server's data goes to the fallback folder
    # (what a checkout under /root gets), here one of this test's own.
    server_dir = Path("/var/tmp") / f"kb-test-pg-{tmp_path.name}"
    env = {
        "KB_LOCAL_DIR": str(tmp_path),
        "KB_PG_PORT": str(port),
        "KB_PG_SERVER_DIR": str(server_dir),
    }
    try:
        first = _script("postgres", "up", env)
        assert first.returncode == 0, first.stderr
        second = _script("postgres", "up", env)
        assert second.returncode == 0 and "already running" in second.stderr
        assert _script("postgres", "status", env).returncode == 0
        assert _pids_of(f"port={port}")
        down = _script("postgres", "down", env)
        assert down.returncode == 0, down.stderr
        assert not _pids_of(f"port={port}")
        assert _script("postgres", "status", env).returncode == 3
    finally:
        _script("postgres", "down", env)
        shutil.rmtree(server_dir, ignore_errors=True)


def test_port_in_use_names_the_port_and_the_log(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {
            "KB_LOCAL_DIR": str(tmp_path),
            "KB_KAFKA_PORT": str(port),
            "KB_KAFKA_CONTROLLER_PORT": str(free_port()),
        }
        result = _script("kafka", "up", env)
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert str(tmp_path / "kafka" / "logs" / "kafka.log") in result.stderr


def test_crash_on_start_shows_the_log(tmp_path: Path) -> None:
    env = {
        "KB_LOCAL_DIR": str(tmp_path),
        "KB_KAFKA_PORT": str(free_port()),
        "KB_KAFKA_CONTROLLER_PORT": str(free_port()),
        "KB_KAFKA_HEAP": "-Xmx1x",  # the JVM refuses this and exits at once
        "KB_KAFKA_JMX_PORT": "",  # no JMX exporter agent: the shared broker's holds its port
    }
    result = _script("kafka", "up", env)
    assert result.returncode != 0
    assert "crashed" in result.stderr and "kafka.log" in result.stderr
    assert not _pids_of(f"kafka[.]Kafka {tmp_path}")


def test_encoder_service_script_makes_its_token_starts_once_and_stops(tmp_path: Path) -> None:
    port = free_port()
    env = {"KB_LOCAL_DIR": str(tmp_path), "KB_ENCODER_PORT": str(port)}
    token = tmp_path / "encoder" / "token"
    try:
        first = _script("encoder", "up", env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) > 30
        second = _script("encoder", "up", env)
        assert second.returncode == 0 and "already running" in second.stderr
        assert _script("encoder", "status", env).returncode == 0
        down = _script("encoder", "down", env)
        assert down.returncode == 0, down.stderr
        assert not _pids_of(f"EncoderService --host 127.0.0.1 --port {port}")
        assert _script("encoder", "status", env).returncode == 3
    finally:
        _script("encoder", "down", env)


def test_a_service_home_links_a_model_store_that_does_not_exist_yet(tmp_path: Path) -> None:
    """On a fresh machine nothing has written to ~/bentoml yet: the store is made before it is
    linked (BentoML fails on a dangling link), and linking again changes nothing."""
    store_home, home = tmp_path / "bentoml", tmp_path / "service" / "bentoml"
    for _ in range(2):
        linked = subprocess.run(
            ["bash", "-c", f'source "{SCRIPTS}/lib.sh" && link_model_store "{home}"'],
            env={**os.environ, "BENTOML_HOME": str(store_home)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert linked.returncode == 0, linked.stderr
        assert (home / "models").is_symlink()
        assert (home / "models").resolve() == (store_home / "models").resolve()
        assert (home / "models").is_dir()

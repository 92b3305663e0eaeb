"""The local services' scripts (deploy/local/<name>/<name>.sh), for tests that stop them."""

from __future__ import annotations

import subprocess

from kb_platform.config import REPO_ROOT


def local_service(name: str, action: str, timeout_s: float = 300) -> None:
    """``bash deploy/local/<name>/<name>.sh <action>`` (up, down), raising when it fails."""
    script = REPO_ROOT / "deploy" / "local" / name / f"{name}.sh"
    command = ["bash", str(script), action]
    subprocess.run(command, check=True, capture_output=True, timeout=timeout_s)

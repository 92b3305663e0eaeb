"""``kb-platform``: the operator's command line."""

from __future__ import annotations

import logging
import subprocess
import sys

import click

from kb_platform.config import REPO_ROOT

SERVICES: tuple[str, ...] = ("postgres", "kafka", "elasticsearch", "dagster")
LOCAL_DEPLOY = REPO_ROOT / "deploy" / "local"


def _run_service_script(service: str, action: str) -> int:
    script = LOCAL_DEPLOY / service / f"{service}.sh"
    if not script.is_file():
        raise click.ClickException(
            f"{script} not found: `services` manages the local stack of a source checkout"
        )
    return subprocess.call(["bash", str(script), action])


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """Operate the kb-platform knowledge base."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("action", type=click.Choice(["up", "down", "status", "install"]))
@click.argument("names", nargs=-1, type=click.Choice(SERVICES))
def services(action: str, names: tuple[str, ...]) -> None:
    """Start, stop or inspect the local PostgreSQL, Kafka, Elasticsearch and Dagster UI."""
    selected = names or SERVICES
    # Stop in reverse order of start so dependents go first.
    ordered = reversed(selected) if action == "down" else selected
    failures = [name for name in ordered if _run_service_script(name, action) != 0]
    if failures:
        verb = "not running" if action == "status" else f"failed to {action}"
        click.echo(f"{verb}: {', '.join(failures)}", err=True)
        sys.exit(3 if action == "status" else 1)


if __name__ == "__main__":
    main()

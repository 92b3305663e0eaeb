"""The code location loads in the local (SQLite) and production (PostgreSQL) configurations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance, EnvVar, asset, materialize, mem_io_manager
from dagster_aws.s3 import S3PickleIOManager
from dagster_postgres import PostgresRunStorage

from kb_platform.config import REPO_ROOT, Settings
from kb_platform.definitions import build_definitions
from kb_platform.resources import build_resources
from kb_platform_tests.postgres_databases import PG, fresh_database, instance_env

DAGSTER = Path(sys.executable).parent / "dagster"


def _validate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def prod_database(postgres_service: None) -> Iterator[str]:
    """A fresh PostgreSQL database, so the instance's schema migration runs for real."""
    with fresh_database("kb_test") as name:
        yield name


@pytest.fixture
def prod_env(tmp_path: Path, prod_database: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster" / "dagster.prod.yaml", home / "dagster.yaml")
    return {
        "KB_ENV": "prod",
        "DAGSTER_HOME": str(home),
        **instance_env(prod_database),
    }


def test_local_definitions_validate(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    result = _validate({"KB_ENV": "local", "DAGSTER_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_prod_definitions_validate_against_postgres(prod_env: dict[str, str]) -> None:
    result = _validate(prod_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prod_instance_keeps_runs_in_postgres(
    prod_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in prod_env.items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)

        @asset
        def probe() -> int:
            return 1

        result = materialize([probe], instance=instance, resources={"io_manager": mem_io_manager})
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.is_success
    with psycopg2.connect(dbname=prod_env["KB_PG_DB"], **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone() == (1,)


def test_prod_resources_use_s3_and_secrets_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KB_ENV", "prod")
    resources = build_resources(Settings())
    assert isinstance(resources["io_manager"], S3PickleIOManager)
    assert resources["elasticsearch"].api_key == EnvVar("KB_ELASTICSEARCH_API_KEY")
    assert resources["kafka"].sasl_password == EnvVar("KB_KAFKA_SASL_PASSWORD")


def test_definitions_build_in_process() -> None:
    defs = build_definitions()
    assert {"io_manager", "kafka", "elasticsearch"} <= set(defs.resources or {})


@pytest.mark.parametrize("env", ["local", "prod"])
def test_runs_embed_through_the_encoder_service_only_where_one_is_configured(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv("KB_ENV", env)
    assert build_resources(Settings())["text_encoder"].service_url is None  # in the run process
    monkeypatch.setenv("KB_ENCODER_URL", "http://kb-encoder:3000")
    encoder = build_resources(Settings())["text_encoder"]
    assert encoder.service_url == "http://kb-encoder:3000"
    assert encoder.service_token == EnvVar("KB_ENCODER_TOKEN")  # a secret, never a setting

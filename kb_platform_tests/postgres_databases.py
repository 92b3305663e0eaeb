"""Databases of their own on the local PostgreSQL (deploy/local/postgres) for tests that run a
Dagster instance with the production storage (deploy/dagster/dagster.prod.yaml)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

PG = {
    "host": "127.0.0.1",
    "port": os.environ.get("KB_PG_PORT", "5433"),
    "user": os.environ.get("KB_PG_USER", "dagster"),
    "password": os.environ.get("KB_PG_PASSWORD", "dagster"),
}


def instance_env(database: str) -> dict[str, str]:
    """The ``KB_PG_*`` variables dagster.prod.yaml reads, for ``database``."""
    return {
        "KB_PG_HOST": PG["host"],
        "KB_PG_PORT": PG["port"],
        "KB_PG_USER": PG["user"],
        "KB_PG_PASSWORD": PG["password"],
        "KB_PG_DB": database,
    }


def _admin(*statements: str) -> None:
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    try:
        for statement in statements:
            conn.cursor().execute(statement)
    finally:
        conn.close()


def recreate_empty(database: str) -> None:
    """Drops ``database`` (its connections too) and makes it again, empty."""
    _admin(f"DROP DATABASE {database} WITH (FORCE)", f"CREATE DATABASE {database}")


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database named ``<prefix>_<random>``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

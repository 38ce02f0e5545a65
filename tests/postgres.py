"""A throwaway PostgreSQL database per test, on the server at THANOS_TEST_POSTGRES_URL.

The default, postgresql://postgres@127.0.0.1:5432/postgres, is the one `.ci/run` starts. Each
database is named THANOS_TEST_POSTGRES_PREFIX (default `thanos_test_`) plus a random suffix,
and is dropped afterwards, with whatever connections a killed gateway left open.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ADMIN_URL = os.environ.get(
    "THANOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = os.environ.get("THANOS_TEST_POSTGRES_PREFIX", "thanos_test_")


def with_database(url: str, name: str, password: str | None = None) -> str:
    """`url` pointing at the database `name` (and carrying `password`, when given)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0] or 'postgres'}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{name}"))


@contextmanager
def database() -> Iterator[str]:
    """Create a fresh database; yield its URL; drop it."""
    name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL at {ADMIN_URL} (.ci/run starts one): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
        try:
            yield with_database(ADMIN_URL, name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def pg_url() -> Iterator[str]:
    with database() as url:
        yield url

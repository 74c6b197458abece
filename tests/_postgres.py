"""PostgreSQL for tests: fresh databases and roles, dropped afterwards; skip without a server unless CI is set."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

# The server these tests use: the admin URL's user must be allowed to create databases and roles.
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_connection() -> psycopg.Connection:
    """An autocommit connection to the maintenance database; skip (or, under CI, fail) without a server."""
    url = make_url(ADMIN_URL)
    try:
        return psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        message = f"no PostgreSQL server at {url.render_as_string(hide_password=True)}: {exc}".splitlines()[0]
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: these tests must run)", pytrace=False)
        pytest.skip(message)


def fresh_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def database_url(name: str, *, user: str | None = None, password: str | None = None) -> str:
    url = make_url(ADMIN_URL).set(database=name)
    if user is not None:
        url = url.set(username=user, password=password)
    return url.render_as_string(hide_password=False)


def drop_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(name: str) -> bool:
    with admin_connection() as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

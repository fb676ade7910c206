"""One fresh Postgres database per test, created and dropped with asyncpg."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.engine import URL, make_url

__all__ = [
    "DATABASE_NAME_PREFIX",
    "create_database",
    "drop_database",
    "fresh_database",
    "to_asyncpg_dsn",
]

DATABASE_NAME_PREFIX = "prebook_test_"
CONNECT_TIMEOUT_S = 10.0


def to_asyncpg_dsn(url: str | URL) -> str:
    """Convert an SQLAlchemy Postgres URL into a DSN that asyncpg.connect() accepts."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _with_async_driver(url: URL) -> URL:
    # The services open databases with SQLAlchemy's async engine, which needs an async
    # driver, so a plain postgresql:// URL from the environment gets asyncpg.
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+asyncpg")
    return url


async def create_database(server_url: str) -> str:
    """Create an empty database named prebook_test_<random hex> on the server.

    `server_url` is an SQLAlchemy URL of any database on the server that the user may
    connect to. Returns the SQLAlchemy URL of the new database, with an async driver.
    """
    server = make_url(server_url)
    name = f"{DATABASE_NAME_PREFIX}{uuid.uuid4().hex[:16]}"

    connection = await asyncpg.connect(to_asyncpg_dsn(server), timeout=CONNECT_TIMEOUT_S)
    try:
        # The name is made of the prefix and hex digits only, so quoting it is enough.
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()

    return _with_async_driver(server.set(database=name)).render_as_string(hide_password=False)


async def drop_database(database_url: str, server_url: str) -> None:
    """Drop the database of `database_url`, closing its remaining connections first.

    Connects through `server_url`, because a database cannot drop itself. Dropping a
    database that no longer exists is not an error.
    """
    name = make_url(database_url).database
    if not name or not name.startswith(DATABASE_NAME_PREFIX):
        raise ValueError(
            f"database {name!r} was not dropped because its name does not start with "
            f"{DATABASE_NAME_PREFIX!r}, the prefix of databases that create_database() makes"
        )

    connection = await asyncpg.connect(to_asyncpg_dsn(server_url), timeout=CONNECT_TIMEOUT_S)
    try:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        # PostgreSQL's DROP DATABASE waits up to 5 s for the terminated backends to exit.
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """Yield the URL of a new empty database and drop the database afterwards."""
    database_url = await create_database(server_url)
    try:
        yield database_url
    finally:
        await drop_database(database_url, server_url)

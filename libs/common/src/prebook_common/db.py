"""The async database engine for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(database_url: str, **kwargs) -> AsyncEngine:
    """Create an engine for ``database_url``.

    SQLite gets WAL mode and a busy timeout, because several services open the same
    file in the embedded mode and a writer must wait for another instead of failing.
    """
    if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
        database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]

    if database_url.startswith("sqlite"):
        if not database_url.startswith("sqlite+aiosqlite"):
            raise ConfigurationError(
                f"database URL {database_url.split('://')[0]}:// is not async: use sqlite+aiosqlite:///PATH"
            )
        engine = create_async_engine(database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine

    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(database_url, **kwargs)


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def engine_scope(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raises the driver's error when the database is unreachable."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

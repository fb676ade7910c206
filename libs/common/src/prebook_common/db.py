"""The async database engine for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 10_000
# A pooled connection of an autocommit engine is pinged at checkout only after it sat
# idle this long, so a burst of statements pays for no ping.
# NOTE: when the server closes a connection that was used within this time, the next
# statement on it fails with a disconnect error (and the pool then replaces it).
PING_AFTER_IDLE_S = 1.0


def create_engine(database_url: str, **kwargs) -> AsyncEngine:
    """Create an engine for ``database_url``.

    SQLite gets WAL mode and a busy timeout, because several services open the same
    file in the embedded mode and a writer must wait for another instead of failing,
    and synchronous=NORMAL, which saves a sync of the file per commit.
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


def create_autocommit_engine(database_url: str, **kwargs) -> AsyncEngine:
    """Create an engine whose connections commit each statement on its own.

    It suits work made of single statements, such as conditional UPDATEs. Such a
    statement then costs no BEGIN and no COMMIT. On Postgres a connection is pinged
    at checkout only when it sat idle for PING_AFTER_IDLE_S, and the ping is one
    round trip, because outside a transaction it needs no BEGIN and ROLLBACK. Several
    statements on one of its connections are not atomic.
    """
    # A connection that is never inside a transaction has nothing to roll back when it
    # returns to the pool, and on SQLite that rollback would cost a trip to its thread.
    # Last in, first out keeps reusing the connections that were used last, whose
    # prepared statements are cached and which need no ping.
    kwargs.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None, pool_use_lifo=True)
    if database_url.startswith("sqlite"):
        return create_engine(database_url, **kwargs)

    engine = create_engine(database_url, pool_pre_ping=False, **kwargs)
    _ping_after_idle(engine.sync_engine, PING_AFTER_IDLE_S)
    return engine


def _ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection at checkout when it sat idle for ``idle_s`` or more.

    A failed ping raises DisconnectionError, so the pool drops that connection and
    checks out another, as with ``pool_pre_ping``.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def record_use(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"ping of a pooled connection failed: {exc}") from exc


async def warm_pool(engine: AsyncEngine, connections: int) -> None:
    """Open ``connections`` pooled connections at once and return them to the pool.

    The first requests after a start then find open connections instead of paying for
    the connect. Raises the driver's error when a connection cannot be opened.
    """
    opened = await asyncio.gather(*(engine.connect().start() for _ in range(connections)), return_exceptions=True)

    for connection in opened:
        if not isinstance(connection, BaseException):
            await connection.close()
    for connection in opened:
        if isinstance(connection, BaseException):
            raise connection


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode, NORMAL syncs at checkpoints rather than at each commit: the database
    # stays consistent, and a power loss may undo the last commits, which a restart
    # re-runs from the prebookings' statuses (a repeated booking counts as booked).
    cursor.execute("PRAGMA synchronous=NORMAL")
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

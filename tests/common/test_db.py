"""The autocommit engine and the pool warm-up of prebook_common.db; the idle ping on Postgres only."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from prebook_common import db
from prebook_common.db import create_autocommit_engine, create_engine, warm_pool


async def _backend_pid(engine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()


async def _terminate(postgres_url: str, pid: int) -> None:
    admin = create_engine(postgres_url)
    try:
        async with admin.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await admin.dispose()


async def test_autocommit_engine_commits_each_statement(database_url: str) -> None:
    engine = create_autocommit_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("CREATE TABLE autocommit_probe (value INTEGER)"))
            await connection.execute(text("INSERT INTO autocommit_probe VALUES (7)"))
        # The connection closed without a COMMIT, so only autocommit can have kept the row.
        async with engine.connect() as connection:
            values = (await connection.execute(text("SELECT value FROM autocommit_probe"))).scalars().all()
    finally:
        await engine.dispose()

    assert values == [7]


async def test_warm_pool_opens_connections(database_url: str) -> None:
    engine = create_autocommit_engine(database_url, pool_size=3)
    try:
        await warm_pool(engine, 3)
        idle = engine.pool.checkedin()
    finally:
        await engine.dispose()

    assert idle == 3


async def test_idle_connection_pinged_and_replaced(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    engine = create_autocommit_engine(postgres_url, pool_size=1)
    try:
        first_pid = await _backend_pid(engine)
        await _terminate(postgres_url, first_pid)
        second_pid = await _backend_pid(engine)
    finally:
        await engine.dispose()

    assert second_pid != first_pid


async def test_recent_connection_not_pinged(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    engine = create_autocommit_engine(postgres_url, pool_size=1)
    try:
        first_pid = await _backend_pid(engine)
        await _terminate(postgres_url, first_pid)
        # Without a ping, the statement itself finds the connection closed.
        with pytest.raises(DBAPIError) as raised:
            await _backend_pid(engine)
        second_pid = await _backend_pid(engine)
    finally:
        await engine.dispose()

    assert raised.value.connection_invalidated
    assert second_pid != first_pid

"""Tests of the Alembic migrations that `prebook_common.migrate.upgrade` runs."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import bindparam, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from prebook_common.db import create_engine, session_factory
from prebook_common.migrate import head_revision, upgrade
from prebook_common.models import Box, UTCDateTime

# Bound on each wait for the database, so a deadlock fails the test instead of hanging it.
UPGRADE_TIMEOUT_S = 60.0
CONCURRENT_UPGRADES = 4
FIRST_REVISION = "0001"


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _index_names(connection: Connection, table: str) -> set[str]:
    return {index["name"] for index in inspect(connection).get_indexes(table)}


def _schema_differences(connection: Connection) -> list[object]:
    return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)


async def _versions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return [row.version_num for row in rows]


def test_head_revision_exists() -> None:
    assert head_revision()


async def test_upgrade_creates_tables(engine: AsyncEngine) -> None:
    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    async with engine.connect() as connection:
        tables = await connection.run_sync(_table_names)
    assert {"prebooking", "aimharder_session", "box", "alembic_version"} <= tables


async def test_upgrade_reaches_head(engine: AsyncEngine) -> None:
    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    assert await _versions(engine) == [head_revision()]


async def test_upgrade_creates_indexes(engine: AsyncEngine) -> None:
    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    async with engine.connect() as connection:
        indexes = await connection.run_sync(_index_names, "prebooking")
    assert {"ix_prebooking_execute_at", "ix_prebooking_status", "ix_prebooking_user_email"} <= indexes


async def test_schema_matches_models(engine: AsyncEngine) -> None:
    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    async with engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)
    assert differences == []


async def test_second_upgrade_keeps_rows(engine: AsyncEngine) -> None:
    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)
    sessions = session_factory(engine)
    async with sessions() as session:
        session.add(Box(subdomain="crossfitbox", aimharder_id="10122", window_days=4))
        await session.commit()

    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    async with sessions() as session:
        box = await session.get(Box, "crossfitbox")
    assert box is not None
    assert box.window_days == 4
    assert box.created_at <= datetime.now(UTC)
    assert await _versions(engine) == [head_revision()]


async def test_upgrade_from_first_keeps_rows(engine: AsyncEngine) -> None:
    await asyncio.wait_for(upgrade(engine, FIRST_REVISION), UPGRADE_TIMEOUT_S)
    # Plain SQL with the columns of the first revision, because the models follow the head.
    insert_box = text(
        "INSERT INTO box (subdomain, aimharder_id, timezone, window_days, created_at, updated_at) "
        "VALUES ('crossfitbox', '10122', 'Europe/Madrid', 4, :at, :at)"
    ).bindparams(bindparam("at", type_=UTCDateTime()))
    async with engine.begin() as connection:
        await connection.execute(insert_box, {"at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)})

    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT subdomain, window_days FROM box"))).all()
    assert [tuple(row) for row in rows] == [("crossfitbox", 4)]
    assert await _versions(engine) == [head_revision()]


async def test_second_upgrade_logs_no_change(engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)
    caplog.set_level(logging.DEBUG, logger="prebook_common.migrate")
    caplog.clear()

    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    messages = [record.getMessage() for record in caplog.records if record.name == "prebook_common.migrate"]
    assert messages == [f"database schema already at {head_revision()}"]


async def test_first_upgrade_logs_change(engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prebook_common.migrate")

    await asyncio.wait_for(upgrade(engine), UPGRADE_TIMEOUT_S)

    messages = [record.getMessage() for record in caplog.records if record.name == "prebook_common.migrate"]
    assert messages == [f"database schema upgraded from empty to {head_revision()}"]


async def test_concurrent_upgrades_on_postgres(postgres_url: str) -> None:
    # Each upgrade gets its own engine, as replicas that start together would.
    engines = [create_engine(postgres_url) for _ in range(CONCURRENT_UPGRADES)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(upgrade(engine) for engine in engines), return_exceptions=True),
            UPGRADE_TIMEOUT_S,
        )
        versions = await _versions(engines[0])
    finally:
        for engine in engines:
            await engine.dispose()

    errors = [result for result in results if isinstance(result, BaseException)]
    assert errors == []
    assert versions == [head_revision()]

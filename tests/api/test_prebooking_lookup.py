"""The gateway's batched prebooking lookup on its kept connection, against a real Postgres."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date

import asyncpg
import pytest

from prebook_common.db import engine_scope
from prebook_common.migrate import upgrade
from prebook_common.models import Prebooking, PrebookingStatus, ms_to_datetime
from prebook_gateway.prebooking_lookup import PrebookingLookup
from support.databases import to_asyncpg_dsn
from support.stack import now_ms


async def _store_prebooking(engine) -> uuid.UUID:
    prebooking = Prebooking(
        user_email="lookup@example.com",
        box_subdomain="simbox",
        box_aimharder_id="4242",
        class_id="9001",
        class_day=date(2030, 1, 1),
        execute_at=ms_to_datetime(now_ms() + 3_600_000),
        status=PrebookingStatus.SCHEDULED,
    )
    async with engine.begin() as connection:
        await connection.execute(Prebooking.__table__.insert().values(**prebooking.model_dump()))
    return prebooking.id


async def _terminate_other_backends(postgres_url: str) -> int:
    """End every other session on this test's database, as a database restart would."""
    connection = await asyncpg.connect(to_asyncpg_dsn(postgres_url))
    try:
        return await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()


async def test_lookup_batches_concurrent_ids(postgres_url: str) -> None:
    async with engine_scope(postgres_url) as engine:
        await upgrade(engine)
        stored = await _store_prebooking(engine)
        lookup = PrebookingLookup(engine)
        try:
            unknown = [uuid.uuid4() for _ in range(5)]
            answers = await asyncio.gather(lookup.exists(stored), *(lookup.exists(other) for other in unknown))
        finally:
            await lookup.aclose()

    assert answers[0] is True
    assert answers[1:] == [False] * 5


async def test_lookup_reconnects_after_termination(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with engine_scope(postgres_url) as engine:
        await upgrade(engine)
        stored = await _store_prebooking(engine)
        lookup = PrebookingLookup(engine)
        try:
            before = await lookup.exists(stored)
            terminated = await _terminate_other_backends(postgres_url)
            with caplog.at_level(logging.WARNING, logger="prebook_gateway.prebooking_lookup"):
                after = await lookup.exists(stored)
                unknown = await lookup.exists(uuid.uuid4())
        finally:
            await lookup.aclose()

    assert before is True
    assert terminated >= 1
    assert after is True
    assert unknown is False
    assert "retrying once on a new connection" in caplog.text

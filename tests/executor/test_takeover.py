"""The takeover scan on a real database: which claims it finds, and that it starts each takeover once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.db import create_engine
from prebook_common.migrate import upgrade
from prebook_common.models import ExecutorLease, Prebooking, PrebookingStatus, utcnow
from prebook_common.settings import Settings
from prebook_executor.leases import LeaseKeeper
from prebook_executor.takeover import TakeoverScanner

LEASE_S = 0.3


class BlockingHandler:
    """Stands in for PrepareHandler: records each takeover and keeps it running until released."""

    def __init__(self) -> None:
        self.taken: list[uuid.UUID] = []
        self.release = asyncio.Event()
        self.stopping = False

    def held_count(self) -> int:
        return 0

    def holds(self, prebooking_id: uuid.UUID) -> bool:
        return False

    async def take_over(self, row: Prebooking) -> None:
        self.taken.append(row.id)
        await self.release.wait()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def _store(engine: AsyncEngine, status: PrebookingStatus, claimed_by: str | None) -> uuid.UUID:
    prebooking_id = uuid.uuid4()
    now = utcnow()
    async with engine.begin() as connection:
        await connection.execute(
            insert(Prebooking).values(
                id=prebooking_id,
                user_email="takeover@example.com",
                box_subdomain="box",
                box_aimharder_id="1",
                class_id="7",
                class_day=date(2030, 1, 1),
                insist=False,
                execute_at=now + timedelta(minutes=5),
                status=status,
                attempts=0,
                claim_seq=1,
                claimed_by=claimed_by,
                created_at=now,
                updated_at=now,
            )
        )
    return prebooking_id


async def test_scan_takes_over_each_lost_claim_once(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(ExecutorLease).values(executor_id="alive", expires_at=utcnow() + timedelta(minutes=5)))
    dead = await _store(engine, PrebookingStatus.FIRING, "dead")
    released = await _store(engine, PrebookingStatus.PREPARED, None)
    await _store(engine, PrebookingStatus.FIRING, "alive")
    await _store(engine, PrebookingStatus.SCHEDULED, None)
    await _store(engine, PrebookingStatus.BOOKED, "dead")

    lease = LeaseKeeper(engine, "scanner", LEASE_S)
    handler = BlockingHandler()
    scanner = TakeoverScanner(Settings(_env_file=None), engine, "scanner", lease, handler)
    await lease.start()
    try:
        assert await scanner.scan_once() == 0  # own renewals not yet healthy for a whole lease
        await asyncio.sleep(LEASE_S * 1.5)

        first = await scanner.scan_once()
        await asyncio.sleep(0)
        second = await scanner.scan_once()
        await asyncio.sleep(0)
    finally:
        handler.release.set()
        await scanner.stop()
        await lease.stop()

    assert first == 2
    assert second == 0
    assert sorted(handler.taken) == sorted([dead, released])

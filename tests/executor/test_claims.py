"""ClaimStore's claim of a waiting prebooking, on SQLite and Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.db import create_autocommit_engine
from prebook_common.migrate import upgrade
from prebook_common.models import Prebooking, PrebookingStatus, ms_to_datetime, utcnow
from prebook_executor.claims import ClaimStore

EXECUTE_AT_MS = 1_900_000_000_123
STREAM_SEQ = 41


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_autocommit_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def _store(engine: AsyncEngine, status: PrebookingStatus = PrebookingStatus.SCHEDULED) -> uuid.UUID:
    prebooking_id = uuid.uuid4()
    now = utcnow()
    async with engine.connect() as connection:
        await connection.execute(
            insert(Prebooking).values(
                id=prebooking_id, user_email="claims@example.com", box_subdomain="box", box_aimharder_id="1",
                class_id="7", class_day=date(2030, 1, 7), insist=False, execute_at=ms_to_datetime(EXECUTE_AT_MS),
                status=status, attempts=0, created_at=now, updated_at=now,
            )
        )
    return prebooking_id


async def test_claim_waiting_claims_scheduled(engine: AsyncEngine) -> None:
    claims = ClaimStore(engine, "executor-a")
    prebooking_id = await _store(engine)

    claimed = await claims.claim_waiting(prebooking_id, STREAM_SEQ, EXECUTE_AT_MS)
    stored = await claims.get(prebooking_id)

    assert claimed is not None
    assert claimed.id == prebooking_id
    assert claimed.execute_at_ms == EXECUTE_AT_MS
    assert stored.status == PrebookingStatus.PREPARED
    assert stored.claim_seq == STREAM_SEQ
    assert stored.claimed_by == "executor-a"


@pytest.mark.parametrize("offset_ms", [-1, 1, 60_000])
async def test_claim_waiting_skips_other_instant(engine: AsyncEngine, offset_ms: int) -> None:
    claims = ClaimStore(engine, "executor-a")
    prebooking_id = await _store(engine)

    claimed = await claims.claim_waiting(prebooking_id, STREAM_SEQ, EXECUTE_AT_MS + offset_ms)
    stored = await claims.get(prebooking_id)

    assert claimed is None
    assert stored.status == PrebookingStatus.SCHEDULED
    assert stored.claimed_by is None


@pytest.mark.parametrize(
    "status", [PrebookingStatus.PREPARED, PrebookingStatus.FIRING, PrebookingStatus.BOOKED, PrebookingStatus.CANCELLED]
)
async def test_claim_waiting_skips_taken_or_final(engine: AsyncEngine, status: PrebookingStatus) -> None:
    claims = ClaimStore(engine, "executor-a")
    prebooking_id = await _store(engine, status)

    claimed = await claims.claim_waiting(prebooking_id, STREAM_SEQ, EXECUTE_AT_MS)
    stored = await claims.get(prebooking_id)

    assert claimed is None
    assert stored.status == status


async def test_second_claim_waiting_loses(engine: AsyncEngine) -> None:
    prebooking_id = await _store(engine)

    first = await ClaimStore(engine, "executor-a").claim_waiting(prebooking_id, STREAM_SEQ, EXECUTE_AT_MS)
    second = await ClaimStore(engine, "executor-b").claim_waiting(prebooking_id, STREAM_SEQ, EXECUTE_AT_MS)

    assert first is not None
    assert second is None


async def test_mark_firing_loses_to_cancel(engine: AsyncEngine) -> None:
    claims = ClaimStore(engine, "executor-a")
    prebooking_id = await _store(engine)
    await claims.claim_waiting(prebooking_id, STREAM_SEQ, EXECUTE_AT_MS)
    async with engine.connect() as connection:
        await connection.execute(
            update(Prebooking).where(Prebooking.id == prebooking_id).values(status=PrebookingStatus.CANCELLED)
        )

    moved = await claims.mark_firing(prebooking_id)

    assert moved is False
    assert (await claims.get(prebooking_id)).status == PrebookingStatus.CANCELLED

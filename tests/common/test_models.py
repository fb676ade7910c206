"""Tests of the tables, the prebooking status machine and UTCDateTime."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from prebook_common.db import session_factory
from prebook_common.migrate import upgrade
from prebook_common.models import (
    FINAL_STATUSES,
    Prebooking,
    PrebookingStatus,
    UTCDateTime,
    allowed_sources,
    datetime_to_ms,
    ms_to_datetime,
    ns_to_datetime,
)

Status = PrebookingStatus

# The forward order of the statuses that are not final.
FORWARD_ORDER = [Status.PENDING, Status.SCHEDULED, Status.PREPARED, Status.FIRING]

EXPECTED_SOURCES = {
    Status.PENDING: set(),
    Status.SCHEDULED: {Status.PENDING},
    Status.PREPARED: {Status.PENDING, Status.SCHEDULED},
    Status.FIRING: {Status.PENDING, Status.SCHEDULED, Status.PREPARED},
    Status.BOOKED: {Status.PENDING, Status.SCHEDULED, Status.PREPARED, Status.FIRING},
    Status.WAITLISTED: {Status.PENDING, Status.SCHEDULED, Status.PREPARED, Status.FIRING},
    Status.FAILED: {Status.PENDING, Status.SCHEDULED, Status.PREPARED, Status.FIRING},
    Status.MISSED: {Status.PENDING, Status.SCHEDULED, Status.PREPARED, Status.FIRING},
    Status.CANCELLED: {Status.PENDING, Status.SCHEDULED, Status.PREPARED},
}

# 2026-01-09 07:00:00.123456 in Madrid (UTC+1), which is 06:00:00.123456 UTC.
MADRID_WINTER = timezone(timedelta(hours=1))
EXECUTE_AT = datetime(2026, 1, 9, 7, 0, 0, 123456, tzinfo=MADRID_WINTER)


# --- status machine -------------------------------------------------------------------------


def test_expected_sources_cover_every_status() -> None:
    assert set(EXPECTED_SOURCES) == set(Status)


@pytest.mark.parametrize("target", list(Status), ids=str)
def test_allowed_sources_per_target(target: PrebookingStatus) -> None:
    assert allowed_sources(target) == EXPECTED_SOURCES[target]


@pytest.mark.parametrize("target", list(Status), ids=str)
def test_no_status_leaves_final(target: PrebookingStatus) -> None:
    assert not allowed_sources(target) & FINAL_STATUSES


@pytest.mark.parametrize("target", list(Status), ids=str)
def test_status_never_moves_to_itself(target: PrebookingStatus) -> None:
    assert target not in allowed_sources(target)


@pytest.mark.parametrize("target", FORWARD_ORDER, ids=str)
def test_status_only_moves_forward(target: PrebookingStatus) -> None:
    later = FORWARD_ORDER[FORWARD_ORDER.index(target) :]

    assert not allowed_sources(target) & set(later)


def test_cancel_impossible_once_firing() -> None:
    assert Status.FIRING not in allowed_sources(Status.CANCELLED)


def test_final_statuses() -> None:
    assert FINAL_STATUSES == {Status.BOOKED, Status.WAITLISTED, Status.FAILED, Status.MISSED, Status.CANCELLED}


# --- time conversions ------------------------------------------------------------------------


def test_ns_to_datetime_keeps_microseconds() -> None:
    value = ns_to_datetime(1_767_938_400_123_456_789)

    assert value == datetime(2026, 1, 9, 6, 0, 0, 123456, tzinfo=UTC)
    assert value.tzinfo is UTC


def test_ns_to_datetime_truncates_nanoseconds() -> None:
    value = ns_to_datetime(1_767_938_400_000_000_999)

    assert value.microsecond == 0


def test_ns_to_datetime_before_epoch() -> None:
    value = ns_to_datetime(-1_000)

    assert value == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_datetime_to_ms_of_aware() -> None:
    assert datetime_to_ms(EXECUTE_AT) == 1_767_938_400_123


def test_datetime_to_ms_ignores_zone() -> None:
    assert datetime_to_ms(EXECUTE_AT) == datetime_to_ms(EXECUTE_AT.astimezone(UTC))


def test_datetime_to_ms_rounds_to_nearest() -> None:
    value = datetime(2026, 1, 9, 6, 0, 0, 123600, tzinfo=UTC)

    assert datetime_to_ms(value) == 1_767_938_400_124


@pytest.mark.parametrize("epoch_ms", [0, 1, 999, 1_767_938_400_123, 1_767_938_400_999, 4_102_444_800_001])
def test_ms_round_trip(epoch_ms: int) -> None:
    value = ms_to_datetime(epoch_ms)

    assert value.tzinfo is UTC
    assert datetime_to_ms(value) == epoch_ms


def test_prebooking_execute_at_ms() -> None:
    prebooking = _prebooking(execute_at=EXECUTE_AT)

    assert prebooking.execute_at_ms == 1_767_938_400_123


# --- UTCDateTime on each backend ------------------------------------------------------------


def _prebooking(**changes: object) -> Prebooking:
    fields: dict[str, object] = {
        "user_email": "athlete@example.test",
        "box_subdomain": "crossfitbox",
        "box_aimharder_id": "10122",
        "class_id": "123456",
        "class_day": date(2026, 1, 13),
        "execute_at": EXECUTE_AT,
    }
    fields.update(changes)
    return Prebooking(**fields)


async def _store_and_reload(engine: AsyncEngine, prebooking: Prebooking) -> Prebooking:
    sessions = session_factory(engine)
    async with sessions() as session:
        session.add(prebooking)
        await session.commit()

    # A second session reads the row from the database, not from the first one's identity map.
    async with sessions() as session:
        return (await session.exec(select(Prebooking).where(Prebooking.id == prebooking.id))).one()


async def test_datetime_round_trip(engine: AsyncEngine) -> None:
    await upgrade(engine)
    fired_at = datetime(2026, 1, 9, 6, 0, 0, 124987, tzinfo=UTC)

    loaded = await _store_and_reload(engine, _prebooking(fired_at=fired_at))

    assert loaded.execute_at == EXECUTE_AT
    assert loaded.execute_at.microsecond == 123456
    assert loaded.execute_at.utcoffset() == timedelta(0)
    assert loaded.fired_at == fired_at
    assert loaded.fired_at.utcoffset() == timedelta(0)


async def test_datetime_none_round_trip(engine: AsyncEngine) -> None:
    await upgrade(engine)

    loaded = await _store_and_reload(engine, _prebooking())

    assert loaded.fired_at is None


async def test_datetime_compares_in_query(engine: AsyncEngine) -> None:
    await upgrade(engine)
    prebooking = _prebooking()
    await _store_and_reload(engine, prebooking)
    sessions = session_factory(engine)

    # A bound in another zone must select the same instant as the stored UTC value.
    async with sessions() as session:
        due_query = select(Prebooking.id).where(Prebooking.execute_at <= EXECUTE_AT)
        due = (await session.exec(due_query)).all()
        early_query = select(Prebooking.id).where(Prebooking.execute_at < EXECUTE_AT - timedelta(microseconds=1))
        early = (await session.exec(early_query)).all()

    assert due == [prebooking.id]
    assert early == []


async def test_status_round_trip(engine: AsyncEngine) -> None:
    await upgrade(engine)

    loaded = await _store_and_reload(engine, _prebooking(status=Status.SCHEDULED))

    assert loaded.status == Status.SCHEDULED


async def test_naive_datetime_rejected(engine: AsyncEngine) -> None:
    await upgrade(engine)
    naive = EXECUTE_AT.replace(tzinfo=None)
    sessions = session_factory(engine)

    async with sessions() as session:
        session.add(_prebooking(id=uuid.uuid4(), execute_at=naive))
        with pytest.raises(StatementError) as caught:
            await session.commit()

    assert isinstance(caught.value.orig, ValueError)
    assert "naive datetime" in str(caught.value.orig)


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_bind_rejects_naive(dialect_name: str) -> None:
    dialect = _dialect(dialect_name)

    with pytest.raises(ValueError, match="naive datetime"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 9, 6, 0), dialect)


def test_sqlite_binds_naive_utc() -> None:
    bound = UTCDateTime().process_bind_param(EXECUTE_AT, _dialect("sqlite"))

    assert bound == datetime(2026, 1, 9, 6, 0, 0, 123456)
    assert bound.tzinfo is None


def test_postgres_binds_aware_utc() -> None:
    bound = UTCDateTime().process_bind_param(EXECUTE_AT, _dialect("postgresql"))

    assert bound == EXECUTE_AT
    assert bound.utcoffset() == timedelta(0)


def _dialect(name: str):
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import aiosqlite

        return aiosqlite.dialect()
    from sqlalchemy.dialects.postgresql import asyncpg

    return asyncpg.dialect()

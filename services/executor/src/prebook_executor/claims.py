"""The executor's status changes on ``prebooking`` rows.

Each change is one conditional UPDATE on the statuses that may precede it, so a
duplicate delivery or a second executor finds nothing to update and skips. Every
method runs one statement through SQLAlchemy Core, without the ORM session's work.
With an engine from ``create_autocommit_engine`` no statement opens a transaction, so
the COMMIT after a write sends nothing to Postgres.

A claim is taken over only by a redelivery of the message that made it (the same
stream sequence in ``claim_seq``), and only when the claiming executor holds no live
lease (``leases.py``) or gave the claim back with ``release``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Update

from prebook_common.models import (
    ExecutorLease,
    Prebooking,
    PrebookingStatus,
    allowed_sources,
    ms_to_datetime,
    ns_to_datetime,
    utcnow,
)

logger = logging.getLogger(__name__)

TAKEOVER_STATUSES = (PrebookingStatus.PREPARED, PrebookingStatus.FIRING)
# execute_at is stored truncated to whole milliseconds, so the half-open range of half a
# millisecond on each side matches exactly the rows whose execute_at_ms equals the event's.
_HALF_MS = timedelta(microseconds=500)
_COLUMNS = tuple(Prebooking.__table__.columns)


@dataclass(frozen=True)
class Outcome:
    """A prebooking's final status and the facts stored with it."""

    status: PrebookingStatus
    book_state: int | None = None
    booking_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    fired_at_ns: int | None = None
    fire_latency_us: int | None = None
    response_ms: float | None = None
    attempts: int = 0


class ClaimStore:
    def __init__(self, engine: AsyncEngine, executor_id: str) -> None:
        self._engine = engine
        self._executor_id = executor_id
        # SQLite has one writer at a time, and a connection that finds the database locked
        # sleeps in its busy handler (sqliteDefaultBusyCallback: 1, 2, 5, 10 ms and longer)
        # before it tries again. Queued on this lock, claims from this process do not.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    async def get(self, prebooking_id: UUID) -> Prebooking | None:
        statement = select(*_COLUMNS).where(Prebooking.id == prebooking_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).first()
        return None if row is None else Prebooking(**row._mapping)

    async def claim_waiting(self, prebooking_id: UUID, stream_seq: int, execute_at_ms: int) -> Prebooking | None:
        """Claim a pending or scheduled prebooking that executes at ``execute_at_ms``, or return None.

        This is the usual claim, made without reading the row first. None means that the
        row is missing, stale, already claimed or final, and ``get`` shows which.
        """
        execute_at = ms_to_datetime(execute_at_ms)
        statement = (
            update(Prebooking)
            .where(
                Prebooking.id == prebooking_id,
                Prebooking.status.in_(allowed_sources(PrebookingStatus.PREPARED)),
                Prebooking.execute_at >= execute_at - _HALF_MS,
                Prebooking.execute_at < execute_at + _HALF_MS,
            )
            .values(status=PrebookingStatus.PREPARED, claim_seq=stream_seq, claimed_by=self._executor_id, updated_at=utcnow())
        )
        return await self._update_returning(statement)

    async def claim(self, prebooking_id: UUID, stream_seq: int) -> Prebooking | None:
        """Move the prebooking to ``prepared`` for this executor, or return None.

        A pending or scheduled prebooking is claimed. One that is already prepared or
        firing is taken over only by a redelivery of the very message that claimed it
        (same stream sequence). The executor holding it must also have no live lease,
        because it died or stopped, or it must have released the claim.
        """
        now = utcnow()
        holder_alive = exists().where(
            ExecutorLease.executor_id == Prebooking.claimed_by,
            ExecutorLease.expires_at > now,
        )
        statement = (
            update(Prebooking)
            .where(
                Prebooking.id == prebooking_id,
                or_(
                    Prebooking.status.in_(allowed_sources(PrebookingStatus.PREPARED)),
                    and_(
                        Prebooking.status.in_(TAKEOVER_STATUSES),
                        Prebooking.claim_seq == stream_seq,
                        ~holder_alive,
                    ),
                ),
            )
            .values(
                status=PrebookingStatus.PREPARED,
                claim_seq=stream_seq,
                claimed_by=self._executor_id,
                updated_at=now,
            )
        )
        return await self._update_returning(statement)

    async def release(self, prebooking_id: UUID, stream_seq: int) -> bool:
        """Give up this executor's claim, so a redelivery of its message may take it over at once.

        The status stays ``prepared`` or ``firing``, because statuses only move forward.
        Returns False when the claim is no longer this executor's.
        """
        statement = (
            update(Prebooking)
            .where(
                Prebooking.id == prebooking_id,
                Prebooking.status.in_(TAKEOVER_STATUSES),
                Prebooking.claim_seq == stream_seq,
                Prebooking.claimed_by == self._executor_id,
            )
            .values(claimed_by=None, updated_at=utcnow())
        )
        return await self._update(statement)

    async def mark_firing(self, prebooking_id: UUID) -> bool:
        """Move a claimed prebooking to ``firing``; False when it was cancelled meanwhile."""
        return await self._move(prebooking_id, PrebookingStatus.FIRING, {}, extra_sources=(PrebookingStatus.FIRING,))

    async def store_outcome(self, prebooking_id: UUID, outcome: Outcome) -> bool:
        values = {
            "book_state": outcome.book_state,
            "booking_id": outcome.booking_id,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "fire_latency_us": outcome.fire_latency_us,
            "response_ms": outcome.response_ms,
            "attempts": outcome.attempts,
        }
        if outcome.fired_at_ns is not None:
            values["fired_at"] = ns_to_datetime(outcome.fired_at_ns)
        return await self._move(prebooking_id, outcome.status, values)

    async def _move(
        self,
        prebooking_id: UUID,
        target: PrebookingStatus,
        values: dict,
        extra_sources: tuple[PrebookingStatus, ...] = (),
    ) -> bool:
        sources = set(allowed_sources(target)) | set(extra_sources)
        statement = (
            update(Prebooking)
            .where(Prebooking.id == prebooking_id, Prebooking.status.in_(sources))
            .values(status=target, updated_at=utcnow(), **values)
        )
        moved = await self._update(statement)
        logger.debug("prebooking %s -> %s: %s", prebooking_id, target, "moved" if moved else "not moved")
        return moved

    async def _update(self, statement: Update) -> bool:
        """Run ``statement``, commit, and return whether it updated exactly one row."""
        async with self._write_lock, self._engine.connect() as connection:
            result = await connection.execute(statement)
            await connection.commit()
        return result.rowcount == 1

    async def _update_returning(self, statement: Update) -> Prebooking | None:
        """Run ``statement``, commit, and return the updated row, or None when no row matched."""
        async with self._write_lock, self._engine.connect() as connection:
            row = (await connection.execute(statement.returning(*_COLUMNS))).first()
            await connection.commit()
        return None if row is None else Prebooking(**row._mapping)

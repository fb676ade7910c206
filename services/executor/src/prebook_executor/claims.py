"""The executor's status changes on ``prebooking`` rows.

Each change is one conditional UPDATE on the statuses that may precede it, so a
duplicate delivery or a second executor finds nothing to update and skips.

A claim is taken over only by a redelivery of the message that made it (the same
stream sequence in ``claim_seq``), and only when the claiming executor holds no live
lease (``leases.py``) or gave the claim back with ``release``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import and_, exists, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.db import session_factory
from prebook_common.models import ExecutorLease, Prebooking, PrebookingStatus, allowed_sources, ns_to_datetime, utcnow

logger = logging.getLogger(__name__)

TAKEOVER_STATUSES = (PrebookingStatus.PREPARED, PrebookingStatus.FIRING)


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
        self._sessions = session_factory(engine)
        self._executor_id = executor_id

    async def get(self, prebooking_id: UUID) -> Prebooking | None:
        async with self._sessions() as session:
            return await session.get(Prebooking, prebooking_id)

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
            .returning(Prebooking)
        )
        async with self._sessions() as session:
            result = await session.execute(statement)
            row = result.scalars().first()
            await session.commit()
            return row

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
        async with self._sessions() as session:
            result = await session.exec(statement)
            await session.commit()
        return result.rowcount == 1

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
        async with self._sessions() as session:
            result = await session.execute(statement)
            await session.commit()
        moved = result.rowcount == 1
        logger.debug("prebooking %s -> %s: %s", prebooking_id, target, "moved" if moved else "not moved")
        return moved

"""Claims on due ``local`` schedule rows, so that replicas never deliver one row twice.

A claim sets ``locked_by`` to the claiming delivery loop and ``locked_until`` to the
end of its lease (``PREBOOK_SCHEDULER_LEASE_S``), and counts the attempt. Only the
lease holder may then mark the row delivered, failed or due again. A row whose lease
ran out because its holder died can be claimed again, so delivery is at least once.
The gateway drops the duplicate prepare event by its ``Nats-Msg-Id``.

On Postgres, the claim selects due rows ``FOR UPDATE SKIP LOCKED`` inside its UPDATE,
so concurrent replicas each take different rows without waiting for each other. SQLite
has no row locks, but it runs one writer at a time, and the UPDATE repeats the "due and
not leased" condition, so a row claimed by one writer no longer matches for the next.
That keeps a second replica on SQLite from delivering twice, but SQLite is meant for one
replica. A failed attempt waits for its retry in ``locked_until`` as well, with
``locked_by`` cleared, so any replica may send the retry.

Instants come from each replica's clock, so replicas need synchronised clocks.

NOTE: a loop that dies between its claim and the POST leaves the row leased for
``PREBOOK_SCHEDULER_LEASE_S`` (30 s by default). That is longer than the default lead
of 5 s, so such a prebooking is missed unless the lease is shorter than the lead.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from prebook_common.db import session_factory
from prebook_common.models import Prebooking, PrebookingStatus, Schedule, ScheduleStatus, utcnow
from prebook_scheduler.backends.local import LocalBackend
from prebook_scheduler.store import scheduler_sources

__all__ = ["Claim", "LeaseStore", "new_owner"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A due schedule row leased to this loop, with the prebooking it wakes."""

    schedule: Schedule
    prebooking: Prebooking


class LeaseStore:
    def __init__(self, engine: AsyncEngine, owner: str, lease_s: float) -> None:
        self._engine = engine
        self._sessions = session_factory(engine)
        self.owner = owner
        self._lease = timedelta(seconds=lease_s)

    def _due(self, now: datetime):
        return (
            Schedule.backend == LocalBackend.name,
            Schedule.status == ScheduleStatus.PENDING,
            Schedule.wake_at <= now,
            or_(Schedule.locked_until.is_(None), Schedule.locked_until <= now),
        )

    async def claim_due(self, now: datetime, limit: int) -> list[Claim]:
        """Lease up to ``limit`` due rows, earliest wake-up first."""
        due = self._due(now)
        candidates = select(Schedule.id).where(*due).order_by(Schedule.wake_at).limit(limit)
        if self._engine.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)

        claim = (
            update(Schedule)
            .where(Schedule.id.in_(candidates.scalar_subquery()), *due)
            .values(
                locked_by=self.owner,
                locked_until=now + self._lease,
                attempts=Schedule.attempts + 1,
                updated_at=now,
            )
            .returning(Schedule)
            .execution_options(synchronize_session=False)
        )

        async with self._sessions() as session:
            schedules = list((await session.exec(claim)).scalars().all())
            if not schedules:
                await session.commit()
                return []
            result = await session.exec(
                select(Prebooking).where(Prebooking.id.in_([row.prebooking_id for row in schedules]))
            )
            prebookings = {row.id: row for row in result.all()}
            await session.commit()

        return [Claim(row, prebookings[row.prebooking_id]) for row in schedules]

    async def mark_delivered(self, schedule: Schedule) -> bool:
        """Mark a leased row delivered. Returns False when the lease is no longer this loop's."""
        now = utcnow()
        return await self._update_leased(
            schedule,
            status=ScheduleStatus.DELIVERED,
            delivered_at=now,
            last_error=None,
            locked_by=None,
            locked_until=None,
            updated_at=now,
        )

    async def retry_at(self, schedule: Schedule, when: datetime, error: str) -> bool:
        """Release a leased row so that it is claimed again at ``when``."""
        return await self._update_leased(
            schedule, last_error=error, locked_by=None, locked_until=when, updated_at=utcnow()
        )

    async def fail(
        self, schedule: Schedule, *, error: str, status: PrebookingStatus, error_code: str
    ) -> tuple[bool, bool]:
        """Mark a leased row failed and move its prebooking to ``status`` with the error.

        Returns whether the row was still leased to this loop, and whether the
        prebooking moved. A prebooking that the executor has claimed keeps its status.
        """
        now = utcnow()
        async with self._sessions() as session:
            result = await session.exec(self._leased_update(schedule).values(
                status=ScheduleStatus.FAILED, last_error=error, locked_by=None, locked_until=None, updated_at=now
            ))
            if result.rowcount != 1:
                await session.rollback()
                return False, False

            moved = await session.exec(
                update(Prebooking)
                .where(
                    Prebooking.id == schedule.prebooking_id,
                    Prebooking.status.in_(scheduler_sources(status)),
                    Prebooking.execute_at == schedule.execute_at,
                )
                .values(status=status, error_code=error_code, error_message=error, updated_at=now)
            )
            await session.commit()
        return True, moved.rowcount == 1

    def _leased_update(self, schedule: Schedule):
        return update(Schedule).where(
            Schedule.id == schedule.id,
            Schedule.status == ScheduleStatus.PENDING,
            Schedule.locked_by == self.owner,
        )

    async def _update_leased(self, schedule: Schedule, **values) -> bool:
        async with self._sessions() as session:
            result = await session.exec(self._leased_update(schedule).values(**values))
            await session.commit()
        return result.rowcount == 1


def new_owner(host: str, pid: int) -> str:
    """Return a lease owner name that is unique to one delivery loop and readable in the database."""
    return f"{host}-{pid}-{uuid.uuid4().hex[:8]}"

"""Schedule rows and prebooking status changes made when events are handled.

Writes are conditional on what the handler read, so two scheduler replicas that handle
events of one prebooking at once cannot both commit: the loser gets ScheduleConflict,
reads again and decides again.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from prebook_common.db import session_factory
from prebook_common.errors import PrebookError
from prebook_common.models import (
    Prebooking,
    PrebookingStatus,
    Schedule,
    ScheduleStatus,
    allowed_sources,
    utcnow,
)
from prebook_scheduler.wake_up import WakeUp

__all__ = ["SCHEDULER_SOURCES", "ScheduleConflict", "ScheduleStore", "scheduler_sources"]

logger = logging.getLogger(__name__)

# Statuses the scheduler may move a prebooking out of. Once the gateway handed it to the
# executor (prepared, firing), only the executor decides its outcome.
SCHEDULER_SOURCES = frozenset({PrebookingStatus.PENDING, PrebookingStatus.SCHEDULED})


def scheduler_sources(target: PrebookingStatus) -> frozenset[PrebookingStatus]:
    """Statuses from which the scheduler may move a prebooking to ``target``."""
    return allowed_sources(target) & SCHEDULER_SOURCES


class ScheduleConflict(PrebookError):
    """The prebooking or its schedule changed between reading and writing it."""


class ScheduleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)

    async def load(self, prebooking_id: uuid.UUID) -> tuple[Prebooking | None, Schedule | None]:
        async with self._sessions() as session:
            prebooking = await session.get(Prebooking, prebooking_id)
            result = await session.exec(select(Schedule).where(Schedule.prebooking_id == prebooking_id))
            return prebooking, result.first()

    async def save(self, wake_up: WakeUp, *, backend: str, message_id: str, replaces: Schedule | None) -> Schedule:
        """Store the schedule of ``wake_up`` and move its prebooking to ``scheduled``.

        One transaction replaces the prebooking's previous schedule row ``replaces``
        (the table keeps one row per prebooking), inserts the new row and updates the
        prebooking, as long as the prebooking is still pending or scheduled at the same
        ``execute_at``. Raises ScheduleConflict when another writer got there first.
        """
        now = utcnow()
        row = Schedule(
            id=wake_up.schedule_id,
            prebooking_id=wake_up.prebooking_id,
            backend=backend,
            execute_at=wake_up.execute_at,
            wake_at=wake_up.wake_at,
            status=ScheduleStatus.PENDING,
            message_id=message_id,
            created_at=now,
            updated_at=now,
        )

        async with self._sessions() as session:
            if replaces is not None:
                deleted = await session.exec(
                    delete(Schedule).where(Schedule.id == replaces.id, Schedule.message_id == replaces.message_id)
                )
                if deleted.rowcount != 1:
                    await session.rollback()
                    raise ScheduleConflict(f"schedule {replaces.id} of prebooking {wake_up.prebooking_id} changed")

            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                await session.rollback()
                raise ScheduleConflict(
                    f"prebooking {wake_up.prebooking_id} got a schedule from another handler"
                ) from exc

            moved = await session.exec(
                update(Prebooking)
                .where(
                    Prebooking.id == wake_up.prebooking_id,
                    # Scheduled too, because a reschedule replaces the schedule.
                    Prebooking.status.in_(SCHEDULER_SOURCES),
                    Prebooking.execute_at == wake_up.execute_at,
                )
                .values(status=PrebookingStatus.SCHEDULED, schedule_id=message_id, updated_at=now)
            )
            if moved.rowcount != 1:
                await session.rollback()
                raise ScheduleConflict(
                    f"prebooking {wake_up.prebooking_id} is no longer pending or scheduled at "
                    f"{wake_up.execute_at.isoformat()}"
                )

            await session.commit()
        return row

    async def mark_cancelled(self, schedule: Schedule) -> bool:
        """Move a pending schedule row to ``cancelled``. Returns False when it is no longer pending."""
        async with self._sessions() as session:
            result = await session.exec(
                update(Schedule)
                .where(
                    Schedule.id == schedule.id,
                    Schedule.message_id == schedule.message_id,
                    Schedule.status == ScheduleStatus.PENDING,
                )
                .values(status=ScheduleStatus.CANCELLED, locked_by=None, locked_until=None, updated_at=utcnow())
            )
            await session.commit()
        return result.rowcount == 1

    async def mark_missed(self, prebooking: Prebooking, reason: str) -> bool:
        """Move a prebooking whose opening passed before it was scheduled to ``missed``."""
        async with self._sessions() as session:
            result = await session.exec(
                update(Prebooking)
                .where(
                    Prebooking.id == prebooking.id,
                    Prebooking.status.in_(scheduler_sources(PrebookingStatus.MISSED)),
                    Prebooking.execute_at == prebooking.execute_at,
                )
                .values(
                    status=PrebookingStatus.MISSED,
                    error_code="MISSED",
                    error_message=reason,
                    updated_at=utcnow(),
                )
            )
            await session.commit()
        return result.rowcount == 1

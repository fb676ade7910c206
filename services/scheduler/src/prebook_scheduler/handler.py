"""From ``prebooking.created|rescheduled|cancelled`` events to schedules.

Every event is handled the same way: read the prebooking and its schedule row, and make
the schedule match the prebooking as it is now. The database, not the event, is the
truth, so a duplicate, late or reordered event changes nothing that is already right:

- Prebooking cancelled or final, or a cancel event: cancel the pending schedule.
- Prepared or firing: skip, because the executor has claimed it.
- Pending or scheduled, with a schedule for its ``execute_at``: nothing to do.
- Pending or scheduled, opening already passed: mark the prebooking ``missed``.
- Otherwise: cancel the old schedule if there is one, schedule the new wake-up, and
  store both the row and the move to ``scheduled`` in one transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from prebook_common.models import FINAL_STATUSES, Prebooking, PrebookingStatus, Schedule, ScheduleStatus, utcnow
from prebook_common.settings import Settings
from prebook_scheduler.backends import DeliveryBackend
from prebook_scheduler.store import ScheduleConflict, ScheduleStore
from prebook_scheduler.wake_up import WakeUp

__all__ = ["ScheduleHandler"]

logger = logging.getLogger(__name__)

# Times one event is decided again after another writer changed the prebooking first.
MAX_CONFLICT_RETRIES = 3


class ScheduleHandler:
    def __init__(
        self,
        settings: Settings,
        store: ScheduleStore,
        backend: DeliveryBackend,
        backends: Mapping[str, DeliveryBackend],
        *,
        on_scheduled: Callable[[datetime], None] | None = None,
    ) -> None:
        """``backend`` makes new schedules, and ``backends`` (by name) cancel the
        schedules that each made. ``on_scheduled`` is called with the wake-up after each
        commit."""
        self._settings = settings
        self._store = store
        self._backend = backend
        self._backends = backends
        self._on_scheduled = on_scheduled

    async def handle(self, prebooking_id: uuid.UUID, *, trigger: str, cancel: bool = False) -> None:
        """Make the schedule of ``prebooking_id`` match the prebooking.

        ``trigger`` names the event for the logs, and ``cancel`` is set by a cancel
        event. Raises BackendUnavailable, ScheduleConflict or a database error when the
        event should be handled again later.
        """
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            try:
                await self._reconcile(prebooking_id, trigger=trigger, cancel=cancel)
                return
            except ScheduleConflict as exc:
                if attempt == MAX_CONFLICT_RETRIES:
                    raise
                logger.info(
                    "%s event for prebooking %s lost a race (%s), deciding again (attempt %d of %d)",
                    trigger, prebooking_id, exc, attempt + 1, MAX_CONFLICT_RETRIES,
                )

    async def _reconcile(self, prebooking_id: uuid.UUID, *, trigger: str, cancel: bool) -> None:
        prebooking, schedule = await self._store.load(prebooking_id)
        if prebooking is None:
            logger.warning("%s event for prebooking %s skipped: not found in the database", trigger, prebooking_id)
            return
        pending_schedule = schedule if schedule is not None and schedule.status == ScheduleStatus.PENDING else None

        # 1. Nothing may fire: cancel whatever is still pending.
        if cancel or prebooking.status in FINAL_STATUSES:
            if pending_schedule is not None:
                await self._cancel(pending_schedule, f"{trigger} event, prebooking {prebooking.status}")
            else:
                logger.info(
                    "%s event for prebooking %s skipped: it is %s and has no pending schedule",
                    trigger, prebooking_id, prebooking.status,
                )
            return

        # 2. The executor has claimed it.
        if prebooking.status not in (PrebookingStatus.PENDING, PrebookingStatus.SCHEDULED):
            logger.info("%s event for prebooking %s skipped: already %s", trigger, prebooking_id, prebooking.status)
            return

        # 3. Already scheduled for this instant (a duplicate or late event).
        if (
            schedule is not None
            and schedule.status != ScheduleStatus.CANCELLED
            and schedule.execute_at == prebooking.execute_at
        ):
            logger.debug(
                "%s event for prebooking %s: already scheduled for %s (schedule %s %s, message %s)",
                trigger, prebooking_id, prebooking.execute_at.isoformat(), schedule.id, schedule.status,
                schedule.message_id,
            )
            return

        # 4. Too late to wake anyone.
        now = utcnow()
        if prebooking.execute_at <= now:
            await self._mark_missed(prebooking, pending_schedule, now, trigger)
            return

        # 5. Schedule the wake-up, replacing an old schedule.
        if pending_schedule is not None:
            await self._cancel_delivery(pending_schedule)
        await self._schedule(prebooking, schedule, trigger)

    async def _schedule(self, prebooking: Prebooking, previous: Schedule | None, trigger: str) -> None:
        wake_up = WakeUp.for_prebooking(prebooking, self._settings.lead_s)
        logger.debug(
            "%s event for prebooking %s: executeAt %s (%d ms), wake-up %s (%d ms, lead %.3f s), backend %s",
            trigger, prebooking.id, prebooking.execute_at.isoformat(), wake_up.execute_at_ms,
            wake_up.wake_at.isoformat(), wake_up.wake_at_ms, self._settings.lead_s, self._backend.name,
        )

        message_id = await self._backend.schedule(wake_up)
        try:
            await self._store.save(wake_up, backend=self._backend.name, message_id=message_id, replaces=previous)
        except ScheduleConflict:
            await self._discard(wake_up, message_id)
            raise

        if self._on_scheduled is not None:
            self._on_scheduled(wake_up.wake_at)
        logger.info(
            "prebooking %s scheduled: wake-up %s for opening %s, backend %s, message %s%s",
            prebooking.id, wake_up.wake_at.isoformat(), wake_up.execute_at.isoformat(), self._backend.name,
            message_id, f", replacing message {previous.message_id}" if previous is not None else "",
        )

    async def _discard(self, wake_up: WakeUp, message_id: str) -> None:
        """Cancel the delivery of a schedule that lost its conflict and was never stored."""
        _, stored = await self._store.load(wake_up.prebooking_id)
        if stored is not None and stored.message_id == message_id:
            # QStash deduplicated this publish into the message that the winner stored.
            return
        await self._backend.cancel(_unsaved_schedule(wake_up, self._backend.name, message_id))

    async def _cancel(self, schedule: Schedule, reason: str) -> None:
        await self._cancel_delivery(schedule)
        if await self._store.mark_cancelled(schedule):
            logger.info(
                "schedule %s of prebooking %s cancelled (%s): backend %s, message %s, wake-up %s",
                schedule.id, schedule.prebooking_id, reason, schedule.backend, schedule.message_id,
                schedule.wake_at.isoformat(),
            )
        else:
            logger.info(
                "schedule %s of prebooking %s was delivered or replaced before it could be cancelled",
                schedule.id, schedule.prebooking_id,
            )

    async def _cancel_delivery(self, schedule: Schedule) -> None:
        backend = self._backends.get(schedule.backend)
        if backend is None:
            # NOTE: a row left by a backend that is not configured now, such as a QStash
            # message after a switch to local, cannot be deleted. It may still call the
            # gateway, where JetStream drops its prepare event as a duplicate (same
            # instant) or the executor skips it as stale (another instant).
            logger.warning(
                "message %s of prebooking %s was made by the %s backend, which is not configured, "
                "so it cannot be cancelled and may still be delivered",
                schedule.message_id, schedule.prebooking_id, schedule.backend,
            )
            return
        await backend.cancel(schedule)

    async def _mark_missed(
        self, prebooking: Prebooking, pending_schedule: Schedule | None, now: datetime, trigger: str
    ) -> None:
        if pending_schedule is not None:
            await self._cancel(pending_schedule, "opening passed")
        reason = (
            f"opening at {prebooking.execute_at.isoformat()} had passed when the scheduler handled its "
            f"{trigger} event at {now.isoformat()}"
        )
        if await self._store.mark_missed(prebooking, reason):
            logger.warning("prebooking %s missed: %s", prebooking.id, reason)
        else:
            raise ScheduleConflict(f"prebooking {prebooking.id} changed before it could be marked missed")


def _unsaved_schedule(wake_up: WakeUp, backend: str, message_id: str) -> Schedule:
    """Build the schedule row of ``wake_up`` that was never stored, for a backend to cancel."""
    return Schedule(
        id=wake_up.schedule_id,
        prebooking_id=wake_up.prebooking_id,
        backend=backend,
        execute_at=wake_up.execute_at,
        wake_at=wake_up.wake_at,
        message_id=message_id,
    )

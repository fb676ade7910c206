"""The takeover scan: claimed bookings whose executor's lease ran out move to this executor.

A booking is claimed by one executor (``claimed_by``) from its prepare step until its
outcome is stored, and its JetStream event is acknowledged once claimed. When that
executor dies, its lease (``leases.py``) runs out, and when it stops it releases the
claims it hands back (``claimed_by`` NULL). Every PREBOOK_EXECUTOR_TAKEOVER_SCAN_S,
each executor runs one query for such claims, nearest target first, and hands each one
to ``PrepareHandler.take_over``. That runs the prepare step with the same conditional
claim as a redelivered event, so two executors that find the same claim cannot both
take it. A claim whose target is more than PREBOOK_MAX_LATE_MS past is stored as missed.

The scan waits until this executor's own lease renewals have been succeeding for a
whole lease, so the first scan after a database outage does not take over the claims of
live executors that had no chance to renew yet. The other way round, when this
executor's own lease may have run out (``check_own_claims``), it drops the parked
bookings that another executor took over meanwhile, so that only the new holder fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import UUID

from sqlalchemy import exists
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from prebook_common.db import session_factory
from prebook_common.models import ExecutorLease, Prebooking, utcnow
from prebook_common.settings import Settings
from prebook_executor.claims import TAKEOVER_STATUSES
from prebook_executor.consumer import PrepareHandler
from prebook_executor.leases import LeaseKeeper

logger = logging.getLogger(__name__)

# Takeovers prepared at the same time, as the consumer prepares events.
TAKEOVER_WORKERS = 16
# A failed scan is logged on the first failure of a streak and then every this many.
REPORT_FAILURE_EVERY = 20
# A booking lost to another executor is still fired here when due within this, so that a
# cancel never meets the FireClock's guard window, where the final byte may be on its way.
LOST_CLAIM_MARGIN_S = 0.1


class TakeoverScanner:
    """Looks for claims of executors whose lease ran out, and takes them over, until stopped."""

    def __init__(
        self, settings: Settings, engine: AsyncEngine, executor_id: str, lease: LeaseKeeper, handler: PrepareHandler
    ) -> None:
        self._settings = settings
        self._executor_id = executor_id
        self._sessions = session_factory(engine)
        self._lease = lease
        self._handler = handler
        self._limit = asyncio.Semaphore(TAKEOVER_WORKERS)
        self._running: set[asyncio.Task[None]] = set()
        # Prebookings with a takeover started and not yet ended, some still waiting for a worker,
        # so that the next scan does not start a second one.
        self._queued: set[UUID] = set()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="takeover-scan")
        logger.info("takeover scan started: every %.2f s", self._settings.executor_takeover_scan_s)

    async def stop(self) -> None:
        """Stop scanning and wait for the takeovers in progress, which park their bookings or end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        logger.info("takeover scan stopped")

    async def scan_once(self) -> int:
        """Start a takeover for each claim found; return how many were started."""
        lease_s = self._lease.lease_s
        healthy_s = self._lease.healthy_for_s()
        if healthy_s < lease_s:
            logger.debug("takeover scan skipped: own lease renewed without a lapse for %.2f s of %.2f s", healthy_s, lease_s)
            return 0

        # Queued takeovers count against the room, and the query finds them again.
        room = self._settings.executor_max_parked - self._handler.held_count() - len(self._queued)
        if room <= 0:
            return 0
        rows = await self._orphaned_claims(room + len(self._queued))
        if self._failures:
            logger.info("takeover scan succeeded again after %d failures", self._failures)
            self._failures = 0

        started = 0
        for row in rows:
            if self._handler.stopping or started >= room:
                break
            if self._handler.holds(row.id) or row.id in self._queued:
                continue
            logger.debug(
                "takeover scan found prebooking %s claimed by %s (target %d ms)", row.id, row.claimed_by, row.execute_at_ms
            )
            self._queued.add(row.id)
            task = asyncio.create_task(self._take_over(row), name=f"takeover-{row.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            started += 1
        return started

    async def check_own_claims(self) -> None:
        """Drop parked bookings whose claim another executor took over while this executor's lease had run out."""
        parked = self._handler.parked_ids()
        if not parked:
            return
        statement = select(Prebooking.id).where(
            Prebooking.claimed_by == self._executor_id, Prebooking.status.in_(TAKEOVER_STATUSES)
        )
        try:
            async with self._sessions() as session:
                still_claimed = set((await session.exec(statement)).all())
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("own claims not checked after a lease lapse (%s: %s)", type(exc).__name__, exc)
            return
        dropped = await self._handler.drop_lost(still_claimed, LOST_CLAIM_MARGIN_S)
        logger.info(
            "own claims checked after a lease lapse: %d of %d parked bookings still claimed here, %d dropped",
            len(parked) - dropped, len(parked), dropped,
        )

    async def _take_over(self, row: Prebooking) -> None:
        try:
            async with self._limit:
                await self._handler.take_over(row)
        except Exception as exc:  # noqa: BLE001  (the next scan finds the released claim again)
            logger.warning("takeover of prebooking %s failed: %s: %s", row.id, type(exc).__name__, exc)
        finally:
            self._queued.discard(row.id)

    async def _orphaned_claims(self, limit: int) -> list[Prebooking]:
        holder_alive = exists().where(
            ExecutorLease.executor_id == Prebooking.claimed_by,
            ExecutorLease.expires_at > utcnow(),
        )
        statement = (
            select(Prebooking)
            .where(Prebooking.status.in_(TAKEOVER_STATUSES), ~holder_alive)
            .order_by(Prebooking.execute_at)
            .limit(limit)
        )
        async with self._sessions() as session:
            return list((await session.exec(statement)).all())

    async def _run(self) -> None:
        interval_s = self._settings.executor_takeover_scan_s
        while True:
            await asyncio.sleep(interval_s)
            if self._handler.stopping:
                return
            try:
                await self.scan_once()
            except (SQLAlchemyError, OSError) as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % REPORT_FAILURE_EVERY == 0:
                    logger.warning(
                        "takeover scan failed (%s: %s, failure %d in a row)", type(exc).__name__, exc, self._failures
                    )

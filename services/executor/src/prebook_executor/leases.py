"""The executor's lease in the database, which keeps other executors off its claims.

Every executor renews its own lease row every third of ``lease_s``, one UPDATE per
executor whatever the number of bookings it holds. The takeover scan (``takeover.py``)
of another executor takes over a claimed booking only when the claiming executor's
lease has run out, which happens when the executor dies or stops renewing.

A lease that runs out during a database outage would let the first scan after the
outage take over the claims of executors that are alive and just have not renewed yet.
So ``healthy_for_s`` returns how long this executor's own renewals have been
succeeding in a row, and the scan takes nothing over until that is a whole lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.models import ExecutorLease, utcnow

logger = logging.getLogger(__name__)

# A failed renewal is logged on the first failure of a streak and then every this many.
REPORT_FAILURE_EVERY = 20


class LeaseKeeper:
    """Renews one executor's lease every third of ``lease_s`` until stopped."""

    def __init__(
        self,
        engine: AsyncEngine,
        executor_id: str,
        lease_s: float,
        on_lapse: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``on_lapse`` runs after a renewal that came a whole lease after the previous one, when other
        executors may have taken over this executor's claims."""
        self._engine = engine
        self._on_lapse = on_lapse
        self._executor_id = executor_id
        self._lease_s = lease_s
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        # time.monotonic() of the first renewal of the current run of successful ones, or None.
        self._healthy_since: float | None = None
        self._last_renewed: float | None = None
        # True when the last renewal came a whole lease or more after the one before it.
        self._lapsed = False

    @property
    def lease_s(self) -> float:
        return self._lease_s

    def healthy_for_s(self) -> float:
        """Return how long this executor's renewals have been succeeding without a lapse, in seconds."""
        if self._healthy_since is None:
            return 0.0
        return time.monotonic() - self._healthy_since

    async def start(self) -> None:
        """Take the lease (raising the database's error when that fails) and keep renewing it."""
        await self._renew()
        self._task = asyncio.create_task(self._run(), name="executor-lease")
        logger.info("executor lease %s taken for %.1f s, renewed every %.2f s", self._executor_id, self._lease_s, self._lease_s / 3)

    async def stop(self) -> None:
        """Stop renewing and delete the lease, so any claim left behind can be taken over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with self._engine.begin() as connection:
                await connection.execute(delete(ExecutorLease).where(ExecutorLease.executor_id == self._executor_id))
        except (SQLAlchemyError, OSError) as exc:
            logger.warning(
                "executor lease %s not deleted (%s: %s); it runs out by itself after %.1f s",
                self._executor_id, type(exc).__name__, exc, self._lease_s,
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                await self._renew()
            except (SQLAlchemyError, OSError) as exc:
                self._healthy_since = None
                self._failures += 1
                if self._failures == 1 or self._failures % REPORT_FAILURE_EVERY == 0:
                    logger.warning(
                        "executor lease %s not renewed (%s: %s, failure %d in a row); other executors take over "
                        "its claims once it runs out",
                        self._executor_id, type(exc).__name__, exc, self._failures,
                    )
                continue
            if self._failures:
                logger.info("executor lease %s renewed again after %d failures", self._executor_id, self._failures)
                self._failures = 0
            if self._lapsed and self._on_lapse is not None:
                await self._on_lapse()

    async def _renew(self) -> None:
        expires_at = utcnow() + timedelta(seconds=self._lease_s)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(ExecutorLease).where(ExecutorLease.executor_id == self._executor_id).values(expires_at=expires_at)
            )
            if result.rowcount == 0:
                await connection.execute(insert(ExecutorLease).values(executor_id=self._executor_id, expires_at=expires_at))

        # A gap of a whole lease between two renewals may have let the lease run out.
        now = time.monotonic()
        self._lapsed = self._last_renewed is not None and now - self._last_renewed >= self._lease_s
        if self._lapsed:
            logger.warning(
                "executor lease %s renewed %.2f s after the previous renewal, so it may have run out meanwhile",
                self._executor_id, now - self._last_renewed,
            )
        if self._healthy_since is None or self._lapsed:
            self._healthy_since = now
        self._last_renewed = now

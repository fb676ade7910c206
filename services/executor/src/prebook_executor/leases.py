"""The executor's lease in the database, which keeps other executors off its claims.

A claim is taken over only by a redelivery of the message that made it (see
``claims.py``), and only when the claiming executor's lease has run out. JetStream
redelivers a parked prepare event when its in-progress acks stop, and a lease runs out
when its renewals stop. Both stop when the executor dies. A NATS restart makes JetStream
redeliver a parked event at once to whichever executor pulls first, while the holder
still renews its lease, so the lease is what keeps that redelivery from firing the
booking a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.db import session_factory
from prebook_common.models import ExecutorLease, utcnow

logger = logging.getLogger(__name__)

# A failed renewal is logged on the first failure of a streak and then every this many.
REPORT_FAILURE_EVERY = 20


class LeaseKeeper:
    """Renews one executor's lease every third of ``lease_s`` until stopped."""

    def __init__(self, engine: AsyncEngine, executor_id: str, lease_s: float) -> None:
        self._sessions = session_factory(engine)
        self._executor_id = executor_id
        self._lease_s = lease_s
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

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
            async with self._sessions() as session:
                await session.exec(delete(ExecutorLease).where(ExecutorLease.executor_id == self._executor_id))
                await session.commit()
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
                self._failures += 1
                if self._failures == 1 or self._failures % REPORT_FAILURE_EVERY == 0:
                    logger.warning(
                        "executor lease %s not renewed (%s: %s, failure %d in a row); other executors may take "
                        "over its claims when JetStream redelivers them",
                        self._executor_id, type(exc).__name__, exc, self._failures,
                    )
                continue
            if self._failures:
                logger.info("executor lease %s renewed again after %d failures", self._executor_id, self._failures)
                self._failures = 0

    async def _renew(self) -> None:
        expires_at = utcnow() + timedelta(seconds=self._lease_s)
        async with self._sessions() as session:
            result = await session.exec(
                update(ExecutorLease).where(ExecutorLease.executor_id == self._executor_id).values(expires_at=expires_at)
            )
            if result.rowcount == 0:
                session.add(ExecutorLease(executor_id=self._executor_id, expires_at=expires_at))
            await session.commit()

"""Looking up whether prebookings exist, with callbacks that arrive together sharing one query.

Each QStash callback checks that its prebooking has a row. With one query per
callback, a gateway process on a 2-core machine accepted 2,100 to 3,400 of 4,000
callbacks sent at 400/s, against all of them without the check
(tests/reliability/test_load.py). So lookups wait in a batch while the previous query
runs, and each query checks up to ``MAX_BATCH`` ids at once, the way a database groups
commits.

The queries run on one connection that the lookup keeps open, in autocommit mode.
Taking a connection from the pool for each query cost about 0.45 ms of CPU with
SQLAlchemy 2.1 and asyncpg, and the pool's pre-ping another 0.25 ms, against 0.2 to
0.3 ms for the query itself (measured on the 2-core machine of ``bench/callback_throughput.py``). A query that
fails on a connection used before is retried once on a new one, which is what the
pre-ping did for a connection that the database had closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import UUID

from sqlalchemy import bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from prebook_common.models import Prebooking

logger = logging.getLogger(__name__)

MAX_BATCH = 500
# A query that takes longer fails its batch, and its connection is closed.
QUERY_TIMEOUT_S = 5.0


class PrebookingLookup:
    """Existence checks of prebookings for many concurrent callers, made with few queries."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._statement = select(Prebooking.id).where(Prebooking.id.in_(bindparam("ids", expanding=True)))
        self._connection: AsyncConnection | None = None
        self._waiting: dict[UUID, list[asyncio.Future[bool]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def exists(self, prebooking_id: UUID) -> bool:
        """Return whether the prebooking's row exists; raises the database's error when the query fails."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(prebooking_id, []).append(future)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="prebooking-lookup")
        return await future

    async def aclose(self) -> None:
        """Stop the running batch, if any, and close the kept connection."""
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._discard_connection(invalidate=False)

    async def _run(self) -> None:
        # Yield once, so that lookups started in the same event loop iteration join the first batch.
        await asyncio.sleep(0)
        while self._waiting:
            ids = list(self._waiting)[:MAX_BATCH]
            batch = {prebooking_id: self._waiting.pop(prebooking_id) for prebooking_id in ids}
            try:
                found = await self._query(ids)
            except Exception as exc:  # noqa: BLE001  (every waiter gets the error and decides)
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue

            for prebooking_id, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(prebooking_id in found)

    async def _query(self, ids: list[UUID]) -> set[UUID]:
        reused = self._connection is not None
        try:
            found = await self._query_once(ids)
        except (SQLAlchemyError, OSError) as exc:
            if not reused or isinstance(exc, TimeoutError):
                raise
            logger.warning(
                "prebooking lookup failed on its kept database connection (%s: %s); retrying once on a new connection",
                type(exc).__name__, exc,
            )
            found = await self._query_once(ids)

        logger.debug("prebooking lookup: %d of %d ids found in one query", len(found), len(ids))
        return found

    async def _query_once(self, ids: list[UUID]) -> set[UUID]:
        """Run the query on the kept connection, opening it first when needed; drops it when the query fails."""
        try:
            if self._connection is None:
                connection = await self._engine.connect()
                # One statement in autocommit mode, so a lookup costs no BEGIN and ROLLBACK round trips.
                self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with asyncio.timeout(QUERY_TIMEOUT_S):
                result = await self._connection.execute(self._statement, {"ids": ids})
            return set(result.scalars())
        except BaseException:
            # A failed or cancelled query may leave the connection in any state, so it never goes back to the pool.
            await self._discard_connection(invalidate=True)
            raise

    async def _discard_connection(self, *, invalidate: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if invalidate:
                await connection.invalidate()
            await connection.close()
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("prebooking lookup: closing its database connection failed: %s: %s", type(exc).__name__, exc)

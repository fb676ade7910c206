"""In-progress acknowledgements that keep a parked JetStream message from redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# No acknowledgement is sent this close to the target, so that nothing but the timer
# runs on the event loop around the instant.
QUIET_WINDOW_NS = 1_000_000_000


async def keep_in_progress(
    send_in_progress: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    target_ns: int,
    prebooking_id: object,
) -> None:
    """Call ``send_in_progress`` every ``interval_s`` until cancelled, except near the target."""
    while True:
        await asyncio.sleep(interval_s)

        if abs(time.time_ns() - target_ns) < QUIET_WINDOW_NS:
            continue
        try:
            await send_in_progress()
        except Exception as exc:  # noqa: BLE001  (a lost heartbeat must not stop the booking)
            logger.warning("in-progress ack for prebooking %s failed: %s", prebooking_id, exc)


def start_keepalive(
    send_in_progress: Callable[[], Awaitable[None]], *, ack_wait_s: float, target_ns: int, prebooking_id: object
) -> asyncio.Task[None]:
    # A third of the ack wait leaves room for two lost heartbeats before redelivery.
    return asyncio.create_task(
        keep_in_progress(send_in_progress, interval_s=ack_wait_s / 3, target_ns=target_ns, prebooking_id=prebooking_id),
        name=f"keepalive-{prebooking_id}",
    )


async def stop_keepalive(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

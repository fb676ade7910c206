"""In-progress acknowledgements that keep a prepare event from redelivery while it is handled.

They run from the moment the event arrives until it is acknowledged, so JetStream
redelivers it to another executor only when this one stopped sending them (it died, or
its event loop stalled for a whole ack wait). The acks come every third of the ack wait.
None is sent in the quiet window just before the target, so that nothing but the timer
runs on the event loop then. The ack that would fall inside the window is sent when the
window opens instead. So the longest gap between two acks is one interval, a third of
the ack wait, plus any delay of the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# Length of the window before the target in which no in-progress ack is sent.
QUIET_WINDOW_NS = 500_000_000

# A failed ack is logged on the first failure of a streak and then every this many.
REPORT_FAILURE_EVERY = 20


def next_ack_ns(now_ns: int, *, interval_ns: int, target_ns: int, quiet_ns: int) -> int:
    """Return when to send the next in-progress ack, in epoch ns, after one sent at ``now_ns``.

    The window from ``target_ns - quiet_ns`` to ``target_ns`` gets no ack. An ack due
    inside it moves to the window's start when that is still ahead, or else to the target.
    """
    quiet_start_ns = target_ns - quiet_ns
    regular_ns = now_ns + interval_ns
    if now_ns < quiet_start_ns <= regular_ns:
        return quiet_start_ns
    if quiet_start_ns <= regular_ns < target_ns:
        return target_ns
    return regular_ns


async def keep_in_progress(
    send_in_progress: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    target_ns: int,
    prebooking_id: object,
) -> None:
    """Call ``send_in_progress`` about every ``interval_s`` until cancelled, but not just before the target."""
    interval_ns = round(interval_s * 1e9)
    # A quiet window longer than the interval would stretch the longest gap between acks.
    quiet_ns = min(QUIET_WINDOW_NS, interval_ns)
    failures = 0
    while True:
        wake_ns = next_ack_ns(time.time_ns(), interval_ns=interval_ns, target_ns=target_ns, quiet_ns=quiet_ns)
        await asyncio.sleep(max(wake_ns - time.time_ns(), 0) / 1e9)

        try:
            await send_in_progress()
        except Exception as exc:  # noqa: BLE001  (a lost ack must not stop the booking)
            failures += 1
            if failures == 1 or failures % REPORT_FAILURE_EVERY == 0:
                logger.warning(
                    "in-progress ack for prebooking %s failed (%s: %s, failure %d in a row)",
                    prebooking_id, type(exc).__name__, exc, failures,
                )
            continue
        if failures:
            logger.info("in-progress acks for prebooking %s sent again after %d failures", prebooking_id, failures)
            failures = 0


def start_keepalive(
    send_in_progress: Callable[[], Awaitable[None]], *, ack_wait_s: float, target_ns: int, prebooking_id: object
) -> asyncio.Task[None]:
    # A third of the ack wait leaves room for two lost acks before a redelivery.
    return asyncio.create_task(
        keep_in_progress(send_in_progress, interval_s=ack_wait_s / 3, target_ns=target_ns, prebooking_id=prebooking_id),
        name=f"keepalive-{prebooking_id}",
    )


async def stop_keepalive(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

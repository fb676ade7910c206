"""Precise waits for an instant on the wall clock.

An asyncio timer on Linux fires up to a millisecond late, because epoll takes its timeout
in whole milliseconds and CPython's selector rounds it up, and later on a busy machine.
So a wait sleeps until a guard window before the target and busy-spins on
``time.time_ns()`` for the rest.
Targets are ``time.time_ns()`` values (nanoseconds since the Unix epoch).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["DEFAULT_GUARD_NS", "check_guard", "sleep_until_guard", "spin_until", "wait_until"]

# Twice the 1 ms that the rounding can add to an asyncio timer. Scheduling delays come on
# top of that, so this is a starting point, not a bound.
# NOTE: on a 2-core machine that ran other tests, 2 % to 10 % of 18 ms asyncio.sleep calls
# woke more than 2 ms late (runs of 30 and 200 sleeps), so such a machine needs a larger guard.
DEFAULT_GUARD_NS = 2_000_000


def check_guard(guard_ns: int) -> None:
    """Raise ValueError unless ``guard_ns`` is zero or positive."""
    if guard_ns < 0:
        raise ValueError(f"guard_ns must be zero or positive, got {guard_ns}")


async def sleep_until_guard(target_ns: int, guard_ns: int) -> None:
    """Sleep until ``guard_ns`` before ``target_ns``, returning at once when that is past."""
    # asyncio.sleep runs on the monotonic clock and the target is on the wall clock, so
    # the remaining time is measured again after each sleep, in case the clock was stepped.
    while True:
        remaining_ns = target_ns - guard_ns - time.time_ns()
        if remaining_ns <= 0:
            return
        await asyncio.sleep(remaining_ns / 1e9)


def spin_until(target_ns: int) -> int:
    """Busy-spin until ``time.time_ns()`` reaches ``target_ns`` and return that reading.

    This blocks the event loop for the whole wait, so call it only inside the guard window.
    """
    now_ns = time.time_ns()
    while now_ns < target_ns:
        now_ns = time.time_ns()
    return now_ns


async def wait_until(target_ns: int, *, guard_ns: int) -> int:
    """Wait until ``target_ns`` and return the ``time.time_ns()`` reading at the return.

    Sleeps until ``guard_ns`` before the target, then spins. The result is never below
    ``target_ns``. A target already past returns without yielding to the event loop.
    """
    check_guard(guard_ns)
    await sleep_until_guard(target_ns, guard_ns)
    return spin_until(target_ns)

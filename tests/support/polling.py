"""Bounded polling for conditions that become true asynchronously."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    message: str,
) -> T:
    """Call `check` until it returns a truthy value, and return that value.

    `check` may be a plain or an async callable. An AssertionError raised by `check`
    counts as "not yet" and is kept as the last value, so a check may use assert
    statements. Any other exception propagates at once. Each call of an async check is
    cancelled when the overall timeout runs out.

    Raises:
        AssertionError: `timeout_s` seconds passed without a truthy value. The error
            contains `message`, the number of calls and the last value or error.
    """
    deadline = time.monotonic() + timeout_s
    calls = 0
    last: object = None

    while True:
        calls += 1
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await _await_until(result, deadline, interval_s)
        except AssertionError as exc:
            last = exc
        else:
            if result:
                return result
            last = result

        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{message} (timed out after {timeout_s} s and {calls} checks; "
                f"last value: {last!r})"
            )
        await asyncio.sleep(interval_s)


async def _await_until(awaitable: Awaitable[T], deadline: float, min_wait_s: float) -> T:
    remaining_s = max(deadline - time.monotonic(), min_wait_s)
    try:
        return await asyncio.wait_for(awaitable, timeout=remaining_s)
    except TimeoutError:
        if time.monotonic() < deadline:
            raise  # the check raised TimeoutError itself
        raise AssertionError(f"the check did not return within {remaining_s:.2f} s") from None

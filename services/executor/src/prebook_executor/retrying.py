"""Retrying a write that must not be lost (an outcome, a completion event)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


async def retry_until_done(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
) -> T:
    """Await ``operation`` until it succeeds, with backoff, logging each retry at WARNING.

    Used after a booking fired, when its outcome exists only in memory: a database or
    NATS outage delays the write but must not lose it. Cancellation stops the retries.
    """
    delay_s = FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            return await operation()
        except retry_on as exc:
            logger.warning("%s failed (attempt %d, %s: %s); retrying in %.1f s", what, attempt, type(exc).__name__, exc, delay_s)
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, MAX_DELAY_S)
        attempt += 1

"""Publishing the REST API's events after their database commit.

The row is committed first, so an event never announces a change that was rolled
back. When NATS is down at that moment, the change is kept and the request still
succeeds. The event is then retried in a background task until JetStream
acknowledges it, and every failed attempt is logged at WARNING. Each event carries a
``Nats-Msg-Id``, so a retry after a lost acknowledgement is dropped as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from faststream.nats import NatsBroker

from prebook_common.errors import PublishError
from prebook_common.events import Event
from prebook_common.settings import Settings
from prebook_gateway.traced_publish import publish_traced

logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 5.0


class EventPublisher:
    def __init__(self, broker: NatsBroker, settings: Settings, connected: Callable[[], bool]) -> None:
        self._broker = broker
        self._settings = settings
        self._connected = connected
        self._retries: set[asyncio.Task[None]] = set()

    @property
    def pending_retries(self) -> int:
        """Number of events still waiting for a successful publish."""
        return len(self._retries)

    async def publish(self, event: Event, message_id: str) -> bool:
        """Publish ``event`` once, or hand it to a background retry when NATS fails.

        Returns True when JetStream acknowledged it now (or dropped it as a duplicate).
        """
        try:
            await self._publish_once(event, message_id)
        except PublishError as exc:
            logger.warning(
                "event %s (%s) not published after commit: %s; retrying in the background",
                event.subject_name, message_id, exc,
            )
            task = asyncio.create_task(self._retry(event, message_id), name=f"publish-{message_id}")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return False
        return True

    async def _publish_once(self, event: Event, message_id: str) -> None:
        if not self._connected():
            raise PublishError("NATS is not connected")
        await publish_traced(self._broker, self._settings, event, message_id=message_id)

    async def _retry(self, event: Event, message_id: str) -> None:
        delay_s = FIRST_RETRY_DELAY_S
        attempt = 1
        while True:
            await asyncio.sleep(delay_s)
            attempt += 1
            try:
                await self._publish_once(event, message_id)
            except PublishError as exc:
                delay_s = min(delay_s * 2, MAX_RETRY_DELAY_S)
                logger.warning(
                    "event %s (%s): publish attempt %d failed: %s; next attempt in %.1f s",
                    event.subject_name, message_id, attempt, exc, delay_s,
                )
                continue

            logger.info("event %s (%s) published on attempt %d", event.subject_name, message_id, attempt)
            return

    async def aclose(self) -> None:
        """Stop the background retries, logging every event that was never published."""
        if not self._retries:
            return
        # NOTE: an event dropped here is lost: its prebooking stays as committed but the
        # scheduler never hears of the change. The ERROR line names each message id.
        unsent = sorted(task.get_name().removeprefix("publish-") for task in self._retries)
        logger.error("stopping with %d unpublished events: %s", len(unsent), ", ".join(unsent))
        for task in list(self._retries):
            task.cancel()
        for task in list(self._retries):
            with contextlib.suppress(asyncio.CancelledError):
                await task

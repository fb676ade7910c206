"""The prepare step: from a ``prebooking.prepare`` event to a booking parked on the timer.

For each event: skip what is stale, late or already taken (acknowledged, with a log line
that says why), claim the prebooking, load the session, build and stage the request,
mark the prebooking ``firing``, and hand it to a background task that waits, fires,
stores the outcome, publishes ``prebooking.completed`` and acknowledges the message.
The handler returns right after staging, so many bookings can be parked at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from faststream.nats.message import NatsMessage

from prebook_common.aimharder import build_book_request
from prebook_common.crypto import DecryptionError
from prebook_common.errors import SessionNotFound
from prebook_common.events import PrebookingPrepare
from prebook_common.models import FINAL_STATUSES, PrebookingStatus
from prebook_common.settings import Settings
from prebook_executor.claims import ClaimStore, Outcome
from prebook_executor.completion import CompletionWriter
from prebook_executor.firing import Firer
from prebook_executor.keepalive import start_keepalive, stop_keepalive

logger = logging.getLogger(__name__)


class PrepareHandler:
    def __init__(self, settings: Settings, claims: ClaimStore, sessions, firer: Firer, completion: CompletionWriter) -> None:
        self._settings = settings
        self._claims = claims
        self._sessions = sessions
        self._firer = firer
        self._completion = completion
        self.parked: set[asyncio.Task[None]] = set()

    async def __call__(self, event: PrebookingPrepare, message: NatsMessage) -> None:
        loaded_at_ns = time.time_ns()
        metadata = message.raw_message.metadata
        stream_seq = metadata.sequence.stream
        prebooking_id = event.prebooking_id
        target_ns = event.execute_at_ms * 1_000_000 + round(self._settings.fire_offset_ms * 1_000_000)
        logger.debug(
            "prepare event for prebooking %s: target %d ms, stream seq %d, delivery %d, qstash retried %d",
            prebooking_id, event.execute_at_ms, stream_seq, metadata.num_delivered, event.retried,
        )

        # 1. Skip what must not fire.
        row = await self._claims.get(prebooking_id)
        if row is None:
            logger.warning("prebooking %s skipped: not found in the database", prebooking_id)
            await message.ack()
            return
        if row.execute_at_ms != event.execute_at_ms:
            logger.warning(
                "prebooking %s skipped: event targets %d but the prebooking now executes at %d (stale callback)",
                prebooking_id, event.execute_at_ms, row.execute_at_ms,
            )
            await message.ack()
            return
        if row.status in FINAL_STATUSES:
            logger.info("prebooking %s skipped: already %s (duplicate delivery)", prebooking_id, row.status)
            await message.ack()
            return

        late_ms = (time.time_ns() - target_ns) / 1_000_000
        if late_ms > self._settings.max_late_ms:
            await self._store_missed(event, message, late_ms)
            return

        # 2. Claim.
        claimed = await self._claims.claim(prebooking_id, stream_seq)
        if claimed is None:
            current = await self._claims.get(prebooking_id)
            status = current.status if current else "deleted"
            logger.info("prebooking %s skipped: %s by another delivery or executor", prebooking_id, status)
            await message.ack()
            return

        # 3. Session and request.
        try:
            cookies = await self._sessions.load_cookies(claimed.user_email)
        except (SessionNotFound, DecryptionError) as exc:
            await self._finish(event, message, Outcome(PrebookingStatus.FAILED, error_code="NO_SESSION", error_message=str(exc)))
            return

        request = build_book_request(
            self._settings.aimharder_box_url(claimed.box_subdomain),
            class_id=claimed.class_id,
            class_day=claimed.class_day,
            insist=claimed.insist,
            family_id=claimed.family_id,
            cookies=cookies,
        )

        # 4. Stage connections, then commit to firing.
        staged = await self._firer.stage(request, prebooking_id=prebooking_id)
        if not await self._claims.mark_firing(prebooking_id):
            await self._firer.discard(staged)
            logger.info("prebooking %s skipped: cancelled while it was being prepared", prebooking_id)
            await message.ack()
            return

        parked_at_ns = time.time_ns()
        logger.info(
            "prebooking %s parked: fires in %.1f ms (received %s, loaded in %.1f ms, staged in %.1f ms)",
            prebooking_id, (target_ns - parked_at_ns) / 1e6, event.received_at_ns,
            (loaded_at_ns - event.received_at_ns) / 1e6, (parked_at_ns - loaded_at_ns) / 1e6,
        )

        task = asyncio.create_task(self._fire_and_finish(event, message, request, staged, target_ns), name=f"booking-{prebooking_id}")
        self.parked.add(task)
        task.add_done_callback(self.parked.discard)

    async def _fire_and_finish(self, event, message, request, staged, target_ns: int) -> None:
        keepalive = start_keepalive(
            message.in_progress, ack_wait_s=self._settings.ack_wait_s, target_ns=target_ns, prebooking_id=event.prebooking_id
        )
        try:
            result = await self._firer.fire(request, staged, target_ns, prebooking_id=event.prebooking_id)
        finally:
            await stop_keepalive(keepalive)

        await self._finish(event, message, result.to_outcome())

    async def _store_missed(self, event: PrebookingPrepare, message: NatsMessage, late_ms: float) -> None:
        reason = f"prepare event arrived {late_ms:.0f} ms after the target, over PREBOOK_MAX_LATE_MS={self._settings.max_late_ms}"
        logger.warning("prebooking %s missed: %s", event.prebooking_id, reason)
        await self._finish(event, message, Outcome(PrebookingStatus.MISSED, error_code="MISSED", error_message=reason))

    async def _finish(self, event: PrebookingPrepare, message: NatsMessage, outcome: Outcome) -> None:
        await self._completion.write(event, outcome)
        await message.ack()

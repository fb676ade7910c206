"""The prepare step: from a ``prebooking.prepare`` event to a booking parked on the timer.

For each event: skip what is stale, late or already taken (acknowledged, with a log line
that says why), claim the prebooking, load the session (refreshed first when it is old,
see ``sessions.py``), build and stage the request, mark the prebooking ``firing``, and
hand it to a background task that waits, fires, stores the outcome, publishes
``prebooking.completed`` and acknowledges the message. The handler returns right after
staging, so many bookings can be parked at once. When AimHarder responds to the fire with
``{"logout": 1}``, the task logs in again with stored credentials and fires once more,
until ``PREBOOK_SESSION_RELOGIN_DEADLINE_S`` after the target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from faststream.nats.message import NatsMessage
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.aimharder import BookRequest, build_book_request
from prebook_common.aimharder_sessions import SessionSecrets
from prebook_common.errors import PrebookError
from prebook_common.events import PrebookingPrepare
from prebook_common.models import FINAL_STATUSES, Prebooking, PrebookingStatus
from prebook_common.settings import Settings
from prebook_executor.claims import ClaimStore, Outcome
from prebook_executor.completion import CompletionWriter
from prebook_executor.firing import FireResult, Firer
from prebook_executor.keepalive import start_keepalive, stop_keepalive
from prebook_executor.sessions import BookingSession, SessionKeeper, SessionUnavailable, renew_hint
from prebook_executor.staging import StagedRequest
from prebook_executor.timeline import Timeline

logger = logging.getLogger(__name__)

# Time kept back for staging when a session refresh runs during the prepare step.
STAGING_RESERVE_S = 1.0


class PrepareHandler:
    def __init__(
        self, settings: Settings, claims: ClaimStore, sessions: SessionKeeper, firer: Firer, completion: CompletionWriter
    ) -> None:
        self._settings = settings
        self._claims = claims
        self._sessions = sessions
        self._firer = firer
        self._completion = completion
        self.parked: set[asyncio.Task[None]] = set()

    async def __call__(self, event: PrebookingPrepare, message: NatsMessage) -> None:
        metadata = message.raw_message.metadata
        stream_seq = metadata.sequence.stream
        prebooking_id = event.prebooking_id
        target_ns = event.execute_at_ms * 1_000_000 + round(self._settings.fire_offset_ms * 1_000_000)
        timeline = Timeline(event, target_ns)
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
            await self._store_missed(event, message, late_ms, timeline)
            return

        # 2. Claim.
        claimed = await self._claims.claim(prebooking_id, stream_seq)
        if claimed is None:
            current = await self._claims.get(prebooking_id)
            status = current.status if current else "deleted"
            logger.info("prebooking %s skipped: %s by another delivery or executor", prebooking_id, status)
            await message.ack()
            return

        # 3. Session and request. A session that cannot be had fails the booking now, before it parks.
        budget_s = (target_ns - time.time_ns()) / 1e9 - STAGING_RESERVE_S
        try:
            booking_session = await self._sessions.open_for_booking(claimed.user_email, prebooking_id=prebooking_id, budget_s=budget_s)
        except SessionUnavailable as exc:
            outcome = Outcome(PrebookingStatus.FAILED, error_code=exc.error_code, error_message=str(exc))
            await self._finish(event, message, outcome, timeline)
            return

        # 4. Stage connections, then commit to firing. The session stays held until the fire ends.
        try:
            request = _book_request(self._settings, claimed, booking_session.secrets.cookies)
            timeline.mark_loaded()
            staged = await self._firer.stage(request, prebooking_id=prebooking_id)
            if not await self._claims.mark_firing(prebooking_id):
                await self._firer.discard(staged)
                await booking_session.aclose()
                logger.info("prebooking %s skipped: cancelled while it was being prepared", prebooking_id)
                await message.ack()
                return
        except BaseException:
            await booking_session.aclose()
            raise

        timeline.mark_parked()
        logger.info(
            "prebooking %s parked: fires in %.1f ms (received %s, loaded in %.1f ms, staged in %.1f ms)",
            prebooking_id, (target_ns - timeline.parked_ns) / 1e6, event.received_at_ns,
            (timeline.loaded_ns - timeline.consumed_ns) / 1e6, (timeline.parked_ns - timeline.loaded_ns) / 1e6,
        )

        task = asyncio.create_task(
            self._fire_and_finish(event, message, claimed, booking_session, request, staged, timeline),
            name=f"booking-{prebooking_id}",
        )
        self.parked.add(task)
        task.add_done_callback(self.parked.discard)

    async def _fire_and_finish(
        self,
        event: PrebookingPrepare,
        message: NatsMessage,
        prebooking: Prebooking,
        booking_session: BookingSession,
        request: BookRequest,
        staged: list[StagedRequest],
        timeline: Timeline,
    ) -> None:
        target_ns = timeline.target_ns
        keepalive = start_keepalive(
            message.in_progress, ack_wait_s=self._settings.ack_wait_s, target_ns=target_ns, prebooking_id=event.prebooking_id
        )
        try:
            result = await self._firer.fire(request, staged, target_ns, prebooking_id=event.prebooking_id)
            if result.logged_out:
                result = await self._relogin_and_fire_again(prebooking, booking_session, result, target_ns)
        finally:
            await stop_keepalive(keepalive)
            await booking_session.aclose()
        timeline.mark_fired(result)

        outcome = result.to_outcome()
        if result.logged_out:
            outcome = replace(outcome, error_code="AUTH_FAILED", error_message=_auth_failed_message(prebooking, booking_session))
        await self._finish(event, message, outcome, timeline)

    async def _relogin_and_fire_again(
        self, prebooking: Prebooking, booking_session: BookingSession, result: FireResult, target_ns: int
    ) -> FireResult:
        """Log in again after a logout at fire time and fire once more, until the re-login deadline."""
        prebooking_id = prebooking.id
        if booking_session.secrets.credentials is None:
            logger.warning(
                "prebooking %s: AimHarder logged out the session of %s at fire time and no credentials are stored",
                prebooking_id, prebooking.user_email,
            )
            # Marks the session expired, so GET /v1/sessions shows it and later bookings fail early.
            await self._relogin(booking_session, prebooking_id)
            return result

        deadline_s = self._settings.session_relogin_deadline_s
        remaining_s = (target_ns + round(deadline_s * 1e9) - time.time_ns()) / 1e9
        logger.warning(
            "prebooking %s: AimHarder logged out the session of %s at fire time; logging in again within %.1f s "
            "(PREBOOK_SESSION_RELOGIN_DEADLINE_S=%.1f)",
            prebooking_id, prebooking.user_email, max(remaining_s, 0.0), deadline_s,
        )
        if remaining_s <= 0:
            return result
        try:
            async with asyncio.timeout(remaining_s):
                fresh = await self._relogin(booking_session, prebooking_id)
        except TimeoutError:
            logger.warning(
                "prebooking %s: re-login did not finish within PREBOOK_SESSION_RELOGIN_DEADLINE_S=%.1f s of the target",
                prebooking_id, deadline_s,
            )
            return result
        if fresh is None:
            return result

        request = _book_request(self._settings, prebooking, fresh.cookies)
        return await self._firer.fire_again(request, result, prebooking_id=prebooking_id)

    async def _relogin(self, booking_session: BookingSession, prebooking_id: object) -> SessionSecrets | None:
        # The outcome of a fired booking must be stored, so an error here ends only the re-login.
        try:
            return await self._sessions.relogin_after_logout(booking_session.secrets, prebooking_id=prebooking_id)
        except (PrebookError, SQLAlchemyError, OSError) as exc:
            logger.warning("prebooking %s: re-login after the logout failed: %s: %s", prebooking_id, type(exc).__name__, exc)
            return None

    async def _store_missed(self, event: PrebookingPrepare, message: NatsMessage, late_ms: float, timeline: Timeline) -> None:
        reason = f"prepare event arrived {late_ms:.0f} ms after the target, over PREBOOK_MAX_LATE_MS={self._settings.max_late_ms}"
        logger.warning("prebooking %s missed: %s", event.prebooking_id, reason)
        await self._finish(event, message, Outcome(PrebookingStatus.MISSED, error_code="MISSED", error_message=reason), timeline)

    async def _finish(self, event: PrebookingPrepare, message: NatsMessage, outcome: Outcome, timeline: Timeline) -> None:
        await self._completion.write(event, outcome, timeline)
        await message.ack()


def _book_request(settings: Settings, prebooking: Prebooking, cookies: dict[str, str]) -> BookRequest:
    return build_book_request(
        settings.aimharder_box_url(prebooking.box_subdomain),
        class_id=prebooking.class_id,
        class_day=prebooking.class_day,
        insist=prebooking.insist,
        family_id=prebooking.family_id,
        cookies=cookies,
    )


def _auth_failed_message(prebooking: Prebooking, booking_session: BookingSession) -> str:
    if booking_session.secrets.credentials is None:
        cause = "and no credentials are stored to log in again"
    else:
        cause = "and logging in again with the stored credentials failed or came too late"
    return f"AimHarder logged out the session of {prebooking.user_email} at fire time {cause}: {renew_hint(prebooking.user_email)}"

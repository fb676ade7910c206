"""The prepare step: from a ``prebooking.prepare`` event to a booking parked on the timer.

For each event: skip what is stale, late or already taken (acknowledged, with a log line
that gives the reason), claim the prebooking, load the session (refreshed first when it is old,
see ``sessions.py``), build and stage the request, mark the prebooking ``firing``, and
hand it to a background task that waits, fires, stores the outcome, publishes
``prebooking.completed`` and acknowledges the message. The handler returns right after
staging, so many bookings can be parked at once. When AimHarder responds to the fire with
``{"logout": 1}``, the task logs in again with stored credentials and fires once more,
until ``PREBOOK_SESSION_RELOGIN_DEADLINE_S`` after the target.

In-progress acks (``keepalive.py``) run from the event's arrival until its final ack. A
redelivery that finds the prebooking claimed by an executor with a live lease is
negatively acknowledged with a delay: the holder's in-progress acks cancel that delay,
and if the holder died the event comes back once it ends. On shutdown, ``hand_back``
gives parked bookings that are not due soon back to JetStream for another executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from uuid import UUID

from faststream.nats.message import NatsMessage
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.aimharder import BookRequest, build_book_request
from prebook_common.aimharder_sessions import SessionSecrets
from prebook_common.errors import PrebookError
from prebook_common.events import PrebookingPrepare
from prebook_common.models import FINAL_STATUSES, Prebooking, PrebookingStatus
from prebook_common.settings import Settings
from prebook_executor.claims import TAKEOVER_STATUSES, ClaimStore, Outcome
from prebook_executor.completion import CompletionWriter
from prebook_executor.firing import FireResult, Firer
from prebook_executor.keepalive import start_keepalive, stop_keepalive
from prebook_executor.sessions import BookingSession, SessionKeeper, SessionUnavailable, renew_hint
from prebook_executor.staging import StagedRequest
from prebook_executor.timeline import Timeline

logger = logging.getLogger(__name__)

# Time kept back for staging when a session refresh runs during the prepare step.
STAGING_RESERVE_S = 1.0
# Parked bookings released and handed back at the same time during a shutdown.
HAND_BACK_CONCURRENCY = 32


@dataclass(eq=False)
class ParkedBooking:
    """A booking waiting for its instant, with what handing it back needs."""

    prebooking_id: UUID
    stream_seq: int
    target_ns: int
    message: NatsMessage
    booking_session: BookingSession
    staged: list[StagedRequest]
    keepalive: asyncio.Task[None]
    task: asyncio.Task[None] | None = None


class PrepareHandler:
    def __init__(
        self, settings: Settings, claims: ClaimStore, sessions: SessionKeeper, firer: Firer, completion: CompletionWriter
    ) -> None:
        self._settings = settings
        self._claims = claims
        self._sessions = sessions
        self._firer = firer
        self._completion = completion
        self._preparing: set[asyncio.Task[None]] = set()
        self._parked: dict[asyncio.Task[None], ParkedBooking] = {}
        # Prebookings this process is preparing or holding parked. A redelivery of one of
        # them (its in-progress acks fell behind, or its lease lapsed under load) must not
        # be claimed again by the same process, which would fire it twice.
        self._held: set[UUID] = set()
        self._stopping = False

    async def __call__(self, event: PrebookingPrepare, message: NatsMessage) -> None:
        if self._stopping:
            logger.info("prebooking %s handed back unprepared: the executor is stopping", event.prebooking_id)
            await message.nack()
            return

        # The prepare step runs in its own task, shielded, because stopping the
        # subscriber cancels its handlers and a half-done claim must not be left behind.
        task = asyncio.create_task(self._prepare(event, message), name=f"prepare-{event.prebooking_id}")
        self._preparing.add(task)
        task.add_done_callback(self._preparing.discard)
        await asyncio.shield(task)

    def stop_taking(self) -> None:
        """Make every later prepare event go back to JetStream at once, unprepared."""
        self._stopping = True

    async def wait_prepared(self) -> None:
        """Wait until every prepare step in progress has parked its booking or ended.

        Each step is bounded by its own timeouts: the session refresh budget and
        PREBOOK_CONNECT_TIMEOUT_S for staging.
        """
        while self._preparing:
            await asyncio.gather(*self._preparing, return_exceptions=True)

    async def hand_back(self, margin_s: float) -> tuple[int, int]:
        """Give every parked booking due more than ``margin_s`` from now back to JetStream.

        Each such booking's task is cancelled, its staged connections closed, its claim
        released and its message negatively acknowledged, so JetStream redelivers it at
        once to another executor. Returns how many were handed back and how many stay
        to fire here.
        """
        deadline_ns = time.time_ns() + round(margin_s * 1e9)
        leaving = [booking for booking in self._parked.values() if booking.target_ns > deadline_ns]
        # The margin keeps the cancel far from the instant, so no final byte has been sent.
        for booking in leaving:
            booking.task.cancel()
        await asyncio.gather(*(booking.task for booking in leaving), return_exceptions=True)

        limit = asyncio.Semaphore(HAND_BACK_CONCURRENCY)
        await asyncio.gather(*(self._give_back(booking, limit) for booking in leaving))
        return len(leaving), len(self._parked)

    async def _give_back(self, booking: ParkedBooking, limit: asyncio.Semaphore) -> None:
        async with limit:
            # A task cancelled before its first step never ran its own clean-up; each call is idempotent.
            await stop_keepalive(booking.keepalive)
            await self._firer.discard(booking.staged)
            await booking.booking_session.aclose()

            try:
                released = await self._claims.release(booking.prebooking_id, booking.stream_seq)
            except (SQLAlchemyError, OSError) as exc:
                # Another executor takes it over anyway once this executor's lease runs out.
                logger.warning(
                    "prebooking %s: claim not released (%s: %s); handing its message back anyway",
                    booking.prebooking_id, type(exc).__name__, exc,
                )
                released = False

            try:
                await booking.message.nack()
            except Exception as exc:  # noqa: BLE001  (nats-py raises several types; JetStream redelivers anyway)
                logger.warning(
                    "prebooking %s: negative ack failed (%s: %s); JetStream redelivers it after PREBOOK_ACK_WAIT_S=%.1f",
                    booking.prebooking_id, type(exc).__name__, exc, self._settings.ack_wait_s,
                )
            logger.info(
                "prebooking %s handed back for another executor (fires in %.1f s, claim %s)",
                booking.prebooking_id, (booking.target_ns - time.time_ns()) / 1e9, "released" if released else "kept",
            )

    async def wait_parked(self) -> None:
        """Wait until every parked booking has fired and finished."""
        while self._parked:
            await asyncio.gather(*self._parked, return_exceptions=True)

    async def _prepare(self, event: PrebookingPrepare, message: NatsMessage) -> None:
        if event.prebooking_id in self._held:
            logger.info(
                "prebooking %s: redelivered to the executor that already holds it; left to the holder",
                event.prebooking_id,
            )
            await message.nack(delay=self._settings.ack_wait_s)
            return

        self._held.add(event.prebooking_id)
        target_ns = event.execute_at_ms * 1_000_000 + round(self._settings.fire_offset_ms * 1_000_000)
        keepalive = start_keepalive(
            message.in_progress, ack_wait_s=self._settings.ack_wait_s, target_ns=target_ns, prebooking_id=event.prebooking_id
        )
        parked = False
        try:
            parked = await self._prepare_steps(event, message, target_ns, keepalive)
        finally:
            if not parked:
                self._held.discard(event.prebooking_id)
                await stop_keepalive(keepalive)

    async def _prepare_steps(
        self, event: PrebookingPrepare, message: NatsMessage, target_ns: int, keepalive: asyncio.Task[None]
    ) -> bool:
        """Skip, claim, load and stage one booking; return True when it was parked with ``keepalive``."""
        metadata = message.raw_message.metadata
        stream_seq = metadata.sequence.stream
        prebooking_id = event.prebooking_id
        timeline = Timeline(event, target_ns)
        logger.debug(
            "prepare event for prebooking %s: target %d ms, stream seq %d, delivery %d, qstash retried %d",
            prebooking_id, event.execute_at_ms, stream_seq, metadata.num_delivered, event.retried,
        )

        # 1. Claim, or skip what must not fire.
        claimed = await self._claim(event, message, stream_seq, target_ns, timeline)
        if claimed is None:
            return False

        # 2. Session and request. A session that cannot be had fails the booking now, before it parks.
        budget_s = (target_ns - time.time_ns()) / 1e9 - STAGING_RESERVE_S
        try:
            booking_session = await self._sessions.open_for_booking(claimed.user_email, prebooking_id=prebooking_id, budget_s=budget_s)
        except SessionUnavailable as exc:
            outcome = Outcome(PrebookingStatus.FAILED, error_code=exc.error_code, error_message=str(exc))
            await self._finish(event, message, outcome, timeline)
            return False

        # 3. Stage connections and commit to firing. The session stays held until the fire ends.
        try:
            request = _book_request(self._settings, claimed, booking_session.secrets.cookies)
            timeline.mark_loaded()
            staged, firing = await self._stage_and_mark_firing(request, prebooking_id)
            if not firing:
                await self._firer.discard(staged)
                await booking_session.aclose()
                logger.info("prebooking %s skipped: cancelled while it was being prepared", prebooking_id)
                await message.ack()
                return False
        except BaseException:
            await booking_session.aclose()
            raise

        timeline.mark_parked()
        logger.info(
            "prebooking %s parked: fires in %.1f ms (received %s, loaded in %.1f ms, staged in %.1f ms)",
            prebooking_id, (target_ns - timeline.parked_ns) / 1e6, event.received_at_ns,
            (timeline.loaded_ns - timeline.consumed_ns) / 1e6, (timeline.parked_ns - timeline.loaded_ns) / 1e6,
        )

        booking = ParkedBooking(prebooking_id, stream_seq, target_ns, message, booking_session, staged, keepalive)
        booking.task = asyncio.create_task(
            self._fire_and_finish(event, booking, claimed, request, timeline), name=f"booking-{prebooking_id}"
        )
        self._parked[booking.task] = booking
        booking.task.add_done_callback(self._forget_parked)
        return True

    async def _claim(
        self, event: PrebookingPrepare, message: NatsMessage, stream_seq: int, target_ns: int, timeline: Timeline
    ) -> Prebooking | None:
        """Claim the prebooking for this event and return it, or None when the event was skipped, stored as missed or handed back."""
        prebooking_id = event.prebooking_id
        # Usually the prebooking waits for this very event, and one UPDATE claims it.
        late_ms = (time.time_ns() - target_ns) / 1_000_000
        if late_ms <= self._settings.max_late_ms:
            claimed = await self._claims.claim_waiting(prebooking_id, stream_seq, event.execute_at_ms)
            if claimed is not None:
                return claimed

        return await self._check_and_claim(event, message, stream_seq, target_ns, timeline)

    async def _check_and_claim(
        self, event: PrebookingPrepare, message: NatsMessage, stream_seq: int, target_ns: int, timeline: Timeline
    ) -> Prebooking | None:
        """Read the prebooking to find why the event must be skipped, or claim it, taking over a dead executor's claim."""
        metadata = message.raw_message.metadata
        prebooking_id = event.prebooking_id

        # Skip what must not fire.
        row = await self._claims.get(prebooking_id)
        if row is None:
            logger.warning("prebooking %s skipped: not found in the database", prebooking_id)
            await message.ack()
            return None
        if row.execute_at_ms != event.execute_at_ms:
            logger.warning(
                "prebooking %s skipped: event targets %d but the prebooking now executes at %d (stale callback)",
                prebooking_id, event.execute_at_ms, row.execute_at_ms,
            )
            await message.ack()
            return None
        if row.status in FINAL_STATUSES:
            logger.info("prebooking %s skipped: already %s (duplicate delivery)", prebooking_id, row.status)
            await message.ack()
            return None

        late_ms = (time.time_ns() - target_ns) / 1_000_000
        if late_ms > self._settings.max_late_ms:
            await self._store_missed(event, message, late_ms, timeline)
            return None

        # Claim, or take over the claim of an executor that died or handed it back.
        claimed = await self._claims.claim(prebooking_id, stream_seq)
        if claimed is None:
            current = await self._claims.get(prebooking_id)
            if current is not None and current.status in TAKEOVER_STATUSES and current.claim_seq == stream_seq:
                # This message's claim is held by a live executor, as after a NATS restart,
                # when JetStream redelivers at once. Acking would lose the event if that
                # executor died later, so it comes back after the delay unless the holder
                # keeps it in progress.
                logger.info(
                    "prebooking %s left to executor %s, whose lease is live (delivery %d); redelivery in %.1f s "
                    "unless that executor keeps the event in progress",
                    prebooking_id, current.claimed_by, metadata.num_delivered, self._settings.ack_wait_s,
                )
                await message.nack(delay=self._settings.ack_wait_s)
                return None
            status = current.status if current else "deleted"
            logger.info("prebooking %s skipped: %s by another delivery or executor", prebooking_id, status)
            await message.ack()
            return None
        if row.status in TAKEOVER_STATUSES and row.claim_seq == stream_seq:
            holder = f"executor {row.claimed_by}, whose lease ran out" if row.claimed_by else "an executor that released it"
            logger.warning(
                "prebooking %s taken over from %s (delivery %d, %.0f ms before the target)",
                prebooking_id, holder, metadata.num_delivered, (target_ns - time.time_ns()) / 1e6,
            )
        return claimed

    async def _stage_and_mark_firing(self, request: BookRequest, prebooking_id: UUID) -> tuple[list[StagedRequest], bool]:
        """Stage the connections while the prebooking moves to ``firing``, and return them and whether it moved.

        The move is the conditional UPDATE of ``mark_firing``, so a cancel stored first
        still wins, and the caller then discards the staged connections. When either
        step raises, any staged connection is closed and the error is raised.
        """
        staged, firing = await asyncio.gather(
            self._firer.stage(request, prebooking_id=prebooking_id), self._claims.mark_firing(prebooking_id), return_exceptions=True
        )
        if isinstance(firing, BaseException):
            if not isinstance(staged, BaseException):
                await self._firer.discard(staged)
            raise firing
        if isinstance(staged, BaseException):
            raise staged
        return staged, firing

    def _forget_parked(self, task: asyncio.Task[None]) -> None:
        booking = self._parked.pop(task, None)
        if booking is not None:
            self._held.discard(booking.prebooking_id)

    async def _fire_and_finish(
        self, event: PrebookingPrepare, booking: ParkedBooking, prebooking: Prebooking, request: BookRequest, timeline: Timeline
    ) -> None:
        target_ns = timeline.target_ns
        booking_session = booking.booking_session
        # The in-progress acks go on until the outcome is stored and the message acknowledged,
        # so a slow AimHarder or a database outage does not make JetStream redeliver a fired booking.
        try:
            try:
                result = await self._firer.fire(request, booking.staged, target_ns, prebooking_id=event.prebooking_id)
                if result.logged_out:
                    result = await self._relogin_and_fire_again(prebooking, booking_session, result, target_ns)
            finally:
                await booking_session.aclose()
            timeline.mark_fired(result)

            outcome = result.to_outcome()
            if result.logged_out:
                outcome = replace(outcome, error_code="AUTH_FAILED", error_message=_auth_failed_message(prebooking, booking_session))
            await self._finish(event, booking.message, outcome, timeline)
        finally:
            await stop_keepalive(booking.keepalive)

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

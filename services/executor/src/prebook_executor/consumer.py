"""The prepare step: from a ``prebooking.prepare`` event to a booking parked on the timer.

For each event: skip what is stale, late or already taken (acknowledged, with a log line
that gives the reason), claim the prebooking and acknowledge the event, load the session
(refreshed first when it is old, see ``sessions.py``), build and stage the request, mark
the prebooking ``firing``, and hand it to a background task that waits, fires, stores the
outcome and publishes ``prebooking.completed``. The handler returns right after staging,
so many bookings can be parked at once. When AimHarder responds to the fire with
``{"logout": 1}``, the task logs in again with stored credentials and fires once more,
until ``PREBOOK_SESSION_RELOGIN_DEADLINE_S`` after the target.

Once claimed, a booking no longer depends on its JetStream message: the executor's lease
(``leases.py``) protects the claim, and when the lease runs out the takeover scan of
another executor (``takeover.py``) takes the booking over through ``take_over``, which
runs the same steps without a message. A redelivery that finds the prebooking claimed
by an executor with a live lease is acknowledged and left to that executor. On shutdown,
``hand_back`` releases the claims of parked bookings that are not due soon, so another
executor's scan takes them over.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass, replace
from datetime import date
from uuid import UUID

from faststream.nats.message import NatsMessage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext
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
from prebook_executor.sessions import BookingSession, SessionKeeper, SessionUnavailable, renew_hint
from prebook_executor.staging import StagedRequest
from prebook_executor.timeline import PrepareFacts, Timeline

logger = logging.getLogger(__name__)

# Time kept back for staging when a session refresh runs during the prepare step.
STAGING_RESERVE_S = 1.0
# Parked bookings released and handed back at the same time during a shutdown.
HAND_BACK_CONCURRENCY = 32
# Delay before JetStream redelivers a prepare event that found this executor full.
FULL_REDELIVERY_DELAY_S = 1.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """Source of a booking in the prepare step: a JetStream message, or the takeover scan.

    ``stream_seq`` is the stream sequence of the prepare event that claimed the booking
    first, which a takeover keeps. ``message`` is None for a takeover found by the scan.
    """

    stream_seq: int
    message: NatsMessage | None = None
    number: int = 0

    def describe(self) -> str:
        return "found by the takeover scan" if self.message is None else f"delivery {self.number}"

    async def ack(self) -> None:
        if self.message is None:
            return
        try:
            await self.message.ack()
        except Exception as exc:  # noqa: BLE001  (nats-py raises several types; a redelivery finds the row settled)
            logger.warning(
                "prepare event of stream seq %d not acknowledged (%s: %s); its redelivery will find the booking claimed",
                self.stream_seq, type(exc).__name__, exc,
            )


@dataclass(eq=False, slots=True)
class ParkedBooking:
    """A booking waiting for its instant, with what handing it back needs."""

    prebooking_id: UUID
    stream_seq: int
    target_ns: int
    booking_session: BookingSession
    staged: list[StagedRequest]
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class BookingTarget:
    """The fields of a claimed prebooking that its fire and a re-login need.

    A parked booking keeps this in place of the ORM row, which takes far more memory.
    """

    id: UUID
    user_email: str
    box_subdomain: str
    class_id: str
    class_day: date
    insist: bool
    family_id: str | None

    @classmethod
    def from_row(cls, row: Prebooking) -> BookingTarget:
        return cls(row.id, row.user_email, row.box_subdomain, row.class_id, row.class_day, row.insist, row.family_id)


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
        # Prebookings this process is preparing or holding parked. A redelivery or a takeover
        # of one of them (after its lease lapsed under load) must not claim it again in the
        # same process, which would fire it twice.
        self._held: set[UUID] = set()
        self._stopping = False

    async def __call__(self, event: PrebookingPrepare, message: NatsMessage) -> None:
        if self._stopping:
            logger.info("prebooking %s handed back unprepared: the executor is stopping", event.prebooking_id)
            await message.nack()
            return
        if not self.has_room():
            logger.warning(
                "prebooking %s redelivered to other executors: this one has %d bookings, the maximum "
                "PREBOOK_EXECUTOR_MAX_PARKED=%d",
                event.prebooking_id, len(self._held), self._settings.executor_max_parked,
            )
            await message.nack(delay=FULL_REDELIVERY_DELAY_S)
            return

        metadata = message.raw_message.metadata
        delivery = Delivery(metadata.sequence.stream, message, metadata.num_delivered)
        await self._run_prepare(event, delivery)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def has_room(self) -> bool:
        """Return whether this executor may take one more booking under PREBOOK_EXECUTOR_MAX_PARKED."""
        return len(self._held) < self._settings.executor_max_parked

    def holds(self, prebooking_id: UUID) -> bool:
        return prebooking_id in self._held

    def held_count(self) -> int:
        return len(self._held)

    async def take_over(self, row: Prebooking) -> None:
        """Prepare and park a booking that another executor claimed and lost, found by the takeover scan."""
        event = PrebookingPrepare(
            prebooking_id=row.id,
            box_subdomain=row.box_subdomain,
            box_aimharder_id=row.box_aimharder_id,
            execute_at_ms=row.execute_at_ms,
            received_at_ns=time.time_ns(),
        )
        await self._run_prepare(event, Delivery(row.claim_seq))

    async def _run_prepare(self, event: PrebookingPrepare, delivery: Delivery) -> None:
        # The prepare step runs in its own task, shielded, because stopping the
        # subscriber cancels its handlers and a half-done claim must not be left behind.
        # The task starts from an empty context. The handler's context contains the
        # JetStream message and FastStream's span, and every task and callback that the
        # prepare step creates would keep a copy of it alive until the booking fires.
        # Only the span's ids carry over, as the trace's parent.
        parent = trace.get_current_span().get_span_context()
        task = asyncio.create_task(
            self._prepare(event, delivery, parent), name=f"prepare-{event.prebooking_id}", context=contextvars.Context()
        )
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
        """Give every parked booking due more than ``margin_s`` from now back to the other executors.

        Each such booking's task is cancelled, its staged connections closed and its
        claim released, so the next takeover scan of another executor takes it over.
        Returns how many were handed back and how many stay to fire here.
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

    async def drop_lost(self, still_claimed: set[UUID], margin_s: float) -> int:
        """Cancel parked bookings that are no longer claimed by this executor, unless due within ``margin_s``.

        Another executor takes a booking over when this executor's lease runs out, for
        example while its event loop was blocked. Without this, both would fire it.
        Returns how many were dropped.
        """
        deadline_ns = time.time_ns() + round(margin_s * 1e9)
        lost = [
            booking
            for booking in self._parked.values()
            if booking.prebooking_id not in still_claimed and booking.target_ns > deadline_ns
        ]
        for booking in lost:
            booking.task.cancel()
        await asyncio.gather(*(booking.task for booking in lost), return_exceptions=True)

        for booking in lost:
            await self._firer.discard(booking.staged)
            await booking.booking_session.aclose()
            logger.warning(
                "prebooking %s dropped: another executor took it over while this executor's lease had run out "
                "(fires in %.1f s)",
                booking.prebooking_id, (booking.target_ns - time.time_ns()) / 1e9,
            )
        return len(lost)

    def parked_ids(self) -> list[UUID]:
        return [booking.prebooking_id for booking in self._parked.values()]

    async def _give_back(self, booking: ParkedBooking, limit: asyncio.Semaphore) -> None:
        async with limit:
            # A task cancelled before its first step never ran its own clean-up; each call is idempotent.
            await self._firer.discard(booking.staged)
            await booking.booking_session.aclose()

            try:
                released = await self._claims.release(booking.prebooking_id, booking.stream_seq)
            except (SQLAlchemyError, OSError) as exc:
                # Another executor takes it over anyway once this executor's lease runs out.
                logger.warning(
                    "prebooking %s: claim not released (%s: %s); another executor takes it over once this "
                    "executor's lease runs out",
                    booking.prebooking_id, type(exc).__name__, exc,
                )
                released = False

            logger.info(
                "prebooking %s handed back for another executor (fires in %.1f s, claim %s)",
                booking.prebooking_id, (booking.target_ns - time.time_ns()) / 1e9, "released" if released else "kept",
            )

    async def wait_parked(self) -> None:
        """Wait until every parked booking has fired and finished."""
        while self._parked:
            await asyncio.gather(*self._parked, return_exceptions=True)

    async def _prepare(self, event: PrebookingPrepare, delivery: Delivery, parent: SpanContext) -> None:
        otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
        if event.prebooking_id in self._held:
            logger.info(
                "prebooking %s: %s reached the executor that already holds it; left to the holder",
                event.prebooking_id, delivery.describe(),
            )
            await delivery.ack()
            return

        self._held.add(event.prebooking_id)
        target_ns = event.execute_at_ms * 1_000_000 + round(self._settings.fire_offset_ms * 1_000_000)
        parked = False
        try:
            parked = await self._prepare_steps(event, delivery, target_ns)
        except Exception:
            # The claim may have been made, and no other executor takes it over while this executor's lease is live.
            await self._release_unparked(event.prebooking_id, delivery.stream_seq)
            raise
        finally:
            if not parked:
                self._held.discard(event.prebooking_id)

    async def _release_unparked(self, prebooking_id: UUID, stream_seq: int) -> None:
        """Give up this executor's claim, if it made one, after the prepare step failed, so a takeover scan tries again."""
        try:
            released = await self._claims.release(prebooking_id, stream_seq)
        except (SQLAlchemyError, OSError) as exc:
            logger.warning(
                "prebooking %s: claim not released after its prepare step failed (%s: %s); it is taken over "
                "once this executor's lease runs out",
                prebooking_id, type(exc).__name__, exc,
            )
            return
        if released:
            logger.warning("prebooking %s: prepare step failed after the claim; claim released for a takeover scan", prebooking_id)

    async def _prepare_steps(self, event: PrebookingPrepare, delivery: Delivery, target_ns: int) -> bool:
        """Skip, claim, load and stage one booking; return True when it was parked."""
        stream_seq = delivery.stream_seq
        prebooking_id = event.prebooking_id
        facts = PrepareFacts.of(event)
        timeline = Timeline(facts, target_ns)
        logger.debug(
            "prepare event for prebooking %s: target %d ms, stream seq %d, %s, qstash retried %d",
            prebooking_id, event.execute_at_ms, stream_seq, delivery.describe(), event.retried,
        )

        # 1. Claim, or skip what must not fire. From here on the lease protects the claim,
        # so the event is acknowledged.
        claimed_row = await self._claim(event, facts, delivery, target_ns, timeline)
        if claimed_row is None:
            return False
        await delivery.ack()
        claimed = BookingTarget.from_row(claimed_row)

        # 2. Session and request. A session that cannot be had fails the booking now, before it parks.
        budget_s = (target_ns - time.time_ns()) / 1e9 - STAGING_RESERVE_S
        try:
            booking_session = await self._sessions.open_for_booking(claimed.user_email, prebooking_id=prebooking_id, budget_s=budget_s)
        except SessionUnavailable as exc:
            outcome = Outcome(PrebookingStatus.FAILED, error_code=exc.error_code, error_message=str(exc))
            await self._finish(facts, delivery, outcome, timeline)
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

        booking = ParkedBooking(prebooking_id, stream_seq, target_ns, booking_session, staged)
        # An empty context, so that the parked task keeps no OpenTelemetry context alive:
        # the timeline keeps the parent span's ids and the task attaches them after the fire.
        booking.task = asyncio.create_task(
            self._fire_and_finish(facts, booking, claimed, request, timeline),
            name=f"booking-{prebooking_id}",
            context=contextvars.Context(),
        )
        self._parked[booking.task] = booking
        # A done callback keeps a copy of the context it was added in, so it gets an empty one.
        booking.task.add_done_callback(self._forget_parked, context=contextvars.Context())
        return True

    async def _claim(
        self, event: PrebookingPrepare, facts: PrepareFacts, delivery: Delivery, target_ns: int, timeline: Timeline
    ) -> Prebooking | None:
        """Claim the prebooking for this event and return it, or None when the event was skipped or stored as missed."""
        # Usually the prebooking waits for this very event, and one UPDATE claims it.
        late_ms = (time.time_ns() - target_ns) / 1_000_000
        if late_ms <= self._settings.max_late_ms:
            claimed = await self._claims.claim_waiting(event.prebooking_id, delivery.stream_seq, event.execute_at_ms)
            if claimed is not None:
                return claimed

        return await self._check_and_claim(event, facts, delivery, target_ns, timeline)

    async def _check_and_claim(
        self, event: PrebookingPrepare, facts: PrepareFacts, delivery: Delivery, target_ns: int, timeline: Timeline
    ) -> Prebooking | None:
        """Read the prebooking to find why the event must be skipped, or claim it, taking over a dead executor's claim."""
        prebooking_id = event.prebooking_id
        stream_seq = delivery.stream_seq

        # Skip what must not fire.
        row = await self._claims.get(prebooking_id)
        if row is None:
            logger.warning("prebooking %s skipped: not found in the database", prebooking_id)
            await delivery.ack()
            return None
        if row.execute_at_ms != event.execute_at_ms:
            logger.warning(
                "prebooking %s skipped: event targets %d but the prebooking now executes at %d (stale callback)",
                prebooking_id, event.execute_at_ms, row.execute_at_ms,
            )
            await delivery.ack()
            return None
        if row.status in FINAL_STATUSES:
            logger.info("prebooking %s skipped: already %s (duplicate delivery)", prebooking_id, row.status)
            await delivery.ack()
            return None

        late_ms = (time.time_ns() - target_ns) / 1_000_000
        if late_ms > self._settings.max_late_ms:
            await self._store_missed(facts, delivery, late_ms, timeline)
            return None

        # Claim, or take over the claim of an executor that died or handed it back.
        claimed = await self._claims.claim(prebooking_id, stream_seq)
        if claimed is None:
            current = await self._claims.get(prebooking_id)
            if current is not None and current.status in TAKEOVER_STATUSES and current.claim_seq == stream_seq:
                # Held by an executor with a live lease, as when a NATS restart redelivers an event whose ack
                # was lost. If that executor dies later, a takeover scan finds the claim.
                logger.info(
                    "prebooking %s left to executor %s, whose lease is live (%s)",
                    prebooking_id, current.claimed_by, delivery.describe(),
                )
                await delivery.ack()
                return None
            status = current.status if current else "deleted"
            logger.info("prebooking %s skipped: %s by another delivery or executor", prebooking_id, status)
            await delivery.ack()
            return None
        if row.status in TAKEOVER_STATUSES and row.claim_seq == stream_seq:
            holder = f"executor {row.claimed_by}, whose lease ran out" if row.claimed_by else "an executor that released it"
            logger.warning(
                "prebooking %s taken over from %s (%s, %.0f ms before the target)",
                prebooking_id, holder, delivery.describe(), (target_ns - time.time_ns()) / 1e6,
            )
        return claimed

    async def _stage_and_mark_firing(self, request: BookRequest, prebooking_id: UUID) -> tuple[list[StagedRequest], bool]:
        """Stage the connections while the prebooking moves to ``firing``, and return them and whether it moved.

        The move is the conditional UPDATE of ``mark_firing``, so a cancel stored first
        still wins, and the caller then discards the staged connections. When either
        step raises, any staged connection is closed and the error is raised.
        """
        # Staging runs in an empty context, because each connection's event loop callbacks
        # keep a copy of the context they were made in for as long as the booking is parked.
        staging = asyncio.create_task(
            self._firer.stage(request, prebooking_id=prebooking_id), name=f"stage-{prebooking_id}", context=contextvars.Context()
        )
        staged, firing = await asyncio.gather(staging, self._claims.mark_firing(prebooking_id), return_exceptions=True)
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
        self, event: PrepareFacts, booking: ParkedBooking, prebooking: BookingTarget, request: BookRequest, timeline: Timeline
    ) -> None:
        target_ns = timeline.target_ns
        booking_session = booking.booking_session
        try:
            result = await self._firer.fire(
                request, booking.staged, target_ns, prebooking_id=event.prebooking_id, trace_parent=timeline.parent
            )
            # The re-login and the completion event are traced under the booking's parent span.
            otel_context.attach(timeline.parent_context())
            if result.logged_out:
                result = await self._relogin_and_fire_again(prebooking, booking_session, result, target_ns)
        finally:
            await booking_session.aclose()
        timeline.mark_fired(result)

        outcome = result.to_outcome()
        if result.logged_out:
            outcome = replace(outcome, error_code="AUTH_FAILED", error_message=_auth_failed_message(prebooking, booking_session))
        await self._completion.write(event, outcome, timeline)

    async def _relogin_and_fire_again(
        self, prebooking: BookingTarget, booking_session: BookingSession, result: FireResult, target_ns: int
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

    async def _store_missed(self, event: PrepareFacts, delivery: Delivery, late_ms: float, timeline: Timeline) -> None:
        reason = f"prepare event arrived {late_ms:.0f} ms after the target, over PREBOOK_MAX_LATE_MS={self._settings.max_late_ms}"
        logger.warning("prebooking %s missed: %s", event.prebooking_id, reason)
        await self._finish(event, delivery, Outcome(PrebookingStatus.MISSED, error_code="MISSED", error_message=reason), timeline)

    async def _finish(self, event: PrepareFacts, delivery: Delivery, outcome: Outcome, timeline: Timeline) -> None:
        await self._completion.write(event, outcome, timeline)
        await delivery.ack()


def _book_request(settings: Settings, prebooking: BookingTarget, cookies: dict[str, str]) -> BookRequest:
    return build_book_request(
        settings.aimharder_box_url(prebooking.box_subdomain),
        class_id=prebooking.class_id,
        class_day=prebooking.class_day,
        insist=prebooking.insist,
        family_id=prebooking.family_id,
        cookies=cookies,
    )


def _auth_failed_message(prebooking: BookingTarget, booking_session: BookingSession) -> str:
    if booking_session.secrets.credentials is None:
        cause = "and no credentials are stored to log in again"
    else:
        cause = "and logging in again with the stored credentials failed or came too late"
    return f"AimHarder logged out the session of {prebooking.user_email} at fire time {cause}: {renew_hint(prebooking.user_email)}"

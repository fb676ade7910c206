"""The ``local`` backend's delivery loop: it sends each due schedule row as QStash would.

A due row becomes the request QStash makes: a POST of the callback body to
``PREBOOK_LOCAL_DELIVERY_URL`` (by default the public callback URL), with
``Upstash-Message-Id`` (one per row) and ``Upstash-Retried``. Its ``Upstash-Signature``
names the public callback URL even when the POST goes elsewhere, as QStash's does.

The response decides the row's fate, by QStash's rules:

- 2xx: delivered.
- 489 with ``Upstash-NonRetryable-Error: true``: failed at once, and the prebooking
  becomes ``failed`` with the reason.
- Any other status, or no response: retried after 1 s, 2 s, 4 s ... (at most
  ``RETRY_MAX_S``), for at most ``PREBOOK_QSTASH_RETRIES + 1`` attempts and only while
  the retry comes before the opening. Otherwise the row fails and the prebooking becomes
  ``failed`` (attempts used up) or ``missed`` (opening reached).

A row claimed after its opening passed, such as one found at start-up after downtime,
is not sent: the prebooking becomes ``missed``.

The loop polls every ``PREBOOK_SCHEDULER_POLL_INTERVAL_S`` and also wakes at each
wake-up instant that ``wake()`` announced, so a new row due before the next poll is
sent on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from datetime import datetime, timedelta

import httpx
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.models import PrebookingStatus, Schedule, datetime_to_ms, utcnow
from prebook_common.settings import Settings
from prebook_common.signatures import sign
from prebook_scheduler.leases import Claim, LeaseStore
from prebook_scheduler.wake_up import callback_body, encode_body

__all__ = ["LocalDelivery"]

logger = logging.getLogger(__name__)

# Maximum deliveries in flight per loop. A claim takes at most the free places.
MAX_IN_FLIGHT = 64
RETRY_BASE_S = 1.0
RETRY_MAX_S = 8.0
# The gateway responds at once (202), so a delivery that takes longer has failed. The
# timeout is also kept under half the lease, so a lease never ends while its holder waits.
DELIVERY_TIMEOUT_S = 10.0
# How much of an error response's body goes into last_error and the logs.
ERROR_BODY_CHARS = 300


class LocalDelivery:
    def __init__(
        self,
        settings: Settings,
        leases: LeaseStore,
        *,
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self._settings = settings
        self._leases = leases
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._url = settings.local_delivery_url or settings.callback_url
        self.http = httpx.AsyncClient(timeout=min(DELIVERY_TIMEOUT_S, settings.scheduler_lease_s / 2))
        self._woken = asyncio.Event()
        self._wake_ups: list[datetime] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self, at: datetime) -> None:
        """Make the loop claim rows at ``at``, before its next poll if that is sooner."""
        heapq.heappush(self._wake_ups, at)
        self._woken.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="local-delivery")
        self._task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        """Stop claiming rows, and wait for the deliveries in flight so no lease is left behind."""
        # The loop stops between claims rather than by cancellation, because a claim
        # cancelled after its commit would leave rows leased but never sent.
        self._stopping = True
        self._woken.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._in_flight:
            logger.info("local delivery stopping: waiting for %d deliveries in flight", len(self._in_flight))
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self.http.aclose()

    async def _run(self) -> None:
        poll_s = self._settings.scheduler_poll_interval_s
        logger.info(
            "local delivery started as %s: posting callbacks to %s, polling every %.2f s, lease %.1f s",
            self._leases.owner, self._url, poll_s, self._settings.scheduler_lease_s,
        )
        started = True
        while not self._stopping:
            # 1. Claim what is due, as many as there are free places.
            now = utcnow()
            free = MAX_IN_FLIGHT - len(self._in_flight)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await self._leases.claim_due(now, free)
                except (SQLAlchemyError, OSError) as exc:
                    logger.warning("claiming due schedule rows failed, trying again in %.2f s: %s", poll_s, exc)
                    await asyncio.sleep(poll_s)
                    continue

            if started:
                logger.info("local delivery found %d due schedule rows at start-up", len(claims))
                started = False

            # 2. Send each claimed row in its own task.
            for claim in claims:
                task = asyncio.create_task(self._deliver(claim), name=f"deliver-{claim.schedule.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

            # 3. Claim again at once when more rows may be due, else sleep until the
            # earliest announced wake-up or the next poll.
            if claims and len(claims) == free:
                continue
            if not self._stopping:
                await self._sleep(now, poll_s)

    async def _sleep(self, claimed_at: datetime, poll_s: float) -> None:
        while self._wake_ups and self._wake_ups[0] <= claimed_at:
            heapq.heappop(self._wake_ups)

        timeout_s = poll_s
        if self._wake_ups:
            timeout_s = min(timeout_s, max((self._wake_ups[0] - utcnow()).total_seconds(), 0.0))

        self._woken.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout_s)

    async def _deliver(self, claim: Claim) -> None:
        try:
            await self._attempt(claim)
        except (SQLAlchemyError, OSError) as exc:
            logger.warning(
                "storing the delivery outcome of schedule %s (prebooking %s) failed, so the row "
                "is claimed again when its lease ends: %s",
                claim.schedule.id, claim.schedule.prebooking_id, exc,
            )

    async def _attempt(self, claim: Claim) -> None:
        schedule, prebooking = claim.schedule, claim.prebooking
        now = utcnow()

        if now >= schedule.execute_at:
            await self._fail(
                schedule,
                f"callback due at {schedule.wake_at.isoformat()} was claimed at {now.isoformat()}, after "
                f"the opening at {schedule.execute_at.isoformat()} (was no scheduler running?)",
                PrebookingStatus.MISSED,
                "MISSED",
            )
            return

        body = encode_body(
            callback_body(
                self._settings.token_secret.get_secret_value(),
                prebooking_id=schedule.prebooking_id,
                execute_at_ms=datetime_to_ms(schedule.execute_at),
                box_subdomain=prebooking.box_subdomain,
                box_aimharder_id=prebooking.box_aimharder_id,
            )
        )
        headers = {
            "Content-Type": "application/json",
            "Upstash-Signature": sign(
                body, self._settings.callback_url, self._settings.qstash_current_signing_key.get_secret_value()
            ),
            "Upstash-Message-Id": schedule.message_id or f"local_{schedule.id}",
            # The claim counted this attempt, so the ones before it are retries.
            "Upstash-Retried": str(schedule.attempts - 1),
        }
        logger.debug(
            "sending message %s of prebooking %s: attempt %d, wake-up %s, %.1f ms after it, opening %s",
            headers["Upstash-Message-Id"], schedule.prebooking_id, schedule.attempts, schedule.wake_at.isoformat(),
            (now - schedule.wake_at).total_seconds() * 1000, schedule.execute_at.isoformat(),
        )

        try:
            response = await self.http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            await self._retry_or_fail(schedule, f"POST {self._url} failed: {type(exc).__name__}: {exc}")
            return

        if response.is_success:
            if await self._leases.mark_delivered(schedule):
                logger.info(
                    "message %s of prebooking %s delivered: status %d on attempt %d, %.1f ms after the wake-up",
                    headers["Upstash-Message-Id"], schedule.prebooking_id, response.status_code, schedule.attempts,
                    (now - schedule.wake_at).total_seconds() * 1000,
                )
            else:
                logger.warning(
                    "message %s of prebooking %s delivered with status %d, but its schedule row was "
                    "rescheduled, cancelled or claimed by another loop meanwhile",
                    headers["Upstash-Message-Id"], schedule.prebooking_id, response.status_code,
                )
            return

        failure = f"POST {self._url} returned status {response.status_code}: {response.text[:ERROR_BODY_CHARS]}"
        if response.status_code == 489 and response.headers.get("Upstash-NonRetryable-Error", "").lower() == "true":
            await self._fail(
                schedule, f"callback rejected as non-retryable: {failure}", PrebookingStatus.FAILED, "CALLBACK_REJECTED"
            )
            return
        await self._retry_or_fail(schedule, failure)

    async def _retry_or_fail(self, schedule: Schedule, error: str) -> None:
        max_attempts = self._settings.qstash_retries + 1
        if schedule.attempts >= max_attempts:
            await self._fail(
                schedule,
                f"callback not delivered in {schedule.attempts} attempts (PREBOOK_QSTASH_RETRIES="
                f"{self._settings.qstash_retries}). Last error: {error}",
                PrebookingStatus.FAILED,
                "DELIVERY_FAILED",
            )
            return

        delay_s = min(self._retry_base_s * 2 ** (schedule.attempts - 1), self._retry_max_s)
        retry_at = utcnow() + timedelta(seconds=delay_s)
        if retry_at >= schedule.execute_at:
            await self._fail(
                schedule,
                f"callback not delivered before the opening at {schedule.execute_at.isoformat()}: attempt "
                f"{schedule.attempts} failed and a retry at {retry_at.isoformat()} would be too late. "
                f"Last error: {error}",
                PrebookingStatus.MISSED,
                "MISSED",
            )
            return

        if await self._leases.retry_at(schedule, retry_at, error):
            logger.warning(
                "message %s of prebooking %s failed on attempt %d of %d, retrying in %.1f s: %s",
                schedule.message_id, schedule.prebooking_id, schedule.attempts, max_attempts, delay_s, error,
            )
            self.wake(retry_at)

    async def _fail(self, schedule: Schedule, reason: str, status: PrebookingStatus, error_code: str) -> None:
        row_failed, moved = await self._leases.fail(schedule, error=reason, status=status, error_code=error_code)
        if not row_failed:
            logger.warning(
                "schedule %s of prebooking %s was rescheduled, cancelled or claimed by another loop "
                "before it could be marked failed (%s)",
                schedule.id, schedule.prebooking_id, reason,
            )
            return
        logger.warning(
            "schedule %s of prebooking %s failed, prebooking %s: %s",
            schedule.id, schedule.prebooking_id, f"now {status}" if moved else "kept its status", reason,
        )


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "local delivery loop stopped by an unexpected error, so no rows are sent until the scheduler restarts",
            exc_info=task.exception(),
        )

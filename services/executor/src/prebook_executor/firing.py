"""One booking's fire: staged connections, the shared clock, "too early" retries.

Before the instant, ``stage`` opens one connection per attempt (the first plus a spare
for each allowed retry) with the whole request written but its final byte. At the
instant, the FireClock writes the final byte. A "too early" answer fires the next spare
``too_early_spacing_ms`` later; the first final answer ends the booking. A connection
that was lost while staged, or never opened, is replaced by a fresh httpx request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, replace

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

from prebook_common.aimharder import BookAnswer, BookOutcome, BookRequest, parse_book_answer
from prebook_common.models import PrebookingStatus
from prebook_common.settings import Settings
from prebook_executor.claims import Outcome
from prebook_executor.fallback import send_fresh
from prebook_executor.fire_clock import FireClock
from prebook_executor.address_cache import AddressCache
from prebook_executor.http1 import prepare_request
from prebook_executor.staging import StagedRequest, StagedResponse, StagingError, stage_prepared
from prebook_executor.timer import wait_until

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FireResult:
    """Result of one booking's fire: the answer, its timings and the attempts made."""

    target_ns: int
    answer: BookAnswer | None
    first_sent_ns: int | None
    response_ms: float | None
    # When the last response's first bytes arrived, epoch ns.
    received_ns: int | None
    attempts: int
    fallbacks: int
    error: str | None = None

    @property
    def logged_out(self) -> bool:
        """True when AimHarder responded with ``{"logout": 1}``, because the session was dead at fire time."""
        return self.answer is not None and self.answer.outcome is BookOutcome.AUTH_FAILED

    @property
    def fire_latency_us(self) -> int | None:
        if self.first_sent_ns is None:
            return None
        return (self.first_sent_ns - self.target_ns) // 1000

    def to_outcome(self) -> Outcome:
        common = {
            "fired_at_ns": self.first_sent_ns,
            "fire_latency_us": self.fire_latency_us,
            "response_ms": self.response_ms,
            "attempts": self.attempts,
        }
        answer = self.answer
        if answer is None:
            return Outcome(PrebookingStatus.FAILED, error_code="NETWORK_ERROR", error_message=self.error, **common)

        if answer.outcome in (BookOutcome.BOOKED, BookOutcome.ALREADY_BOOKED):
            status = PrebookingStatus.BOOKED
        elif answer.outcome is BookOutcome.WAITLISTED:
            status = PrebookingStatus.WAITLISTED
        else:
            status = PrebookingStatus.FAILED

        error_code = None
        if status is PrebookingStatus.FAILED or answer.outcome is BookOutcome.ALREADY_BOOKED:
            error_code = answer.error_code or answer.outcome.upper()
        return Outcome(
            status,
            book_state=answer.book_state,
            booking_id=answer.booking_id,
            error_code=error_code,
            error_message=answer.error_message if error_code else None,
            **common,
        )


class Firer:
    def __init__(self, settings: Settings, clock: FireClock, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._clock = clock
        self._http = http
        self._tls = ssl.create_default_context()
        self._tls.set_alpn_protocols(["http/1.1"])
        self._addresses = AddressCache()

    async def stage(self, request: BookRequest, *, prebooking_id: object) -> list[StagedRequest]:
        """Open one staged connection per attempt; a failed one is logged and left out."""
        count = 1 + self._settings.too_early_retries
        tls = self._tls if request.url.startswith("https://") else None
        # One validation and serialization serves every connection of the booking.
        results: list[StagedRequest | BaseException]
        try:
            prepared = prepare_request(request.url, headers=request.headers, body=request.body)
        except ValueError as exc:
            results = [exc] * count
        else:
            results = await asyncio.gather(
                *(
                    stage_prepared(
                        prepared,
                        request.url,
                        connect_timeout_s=self._settings.connect_timeout_s,
                        ssl_context=tls,
                        addresses=self._addresses,
                    )
                    for _ in range(count)
                ),
                return_exceptions=True,
            )

        staged = [result for result in results if isinstance(result, StagedRequest)]
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, (StagingError, ValueError)):
                raise failure
        if failures:
            logger.warning(
                "prebooking %s: %d of %d connections could not be staged (%s); those attempts will use httpx",
                prebooking_id, len(failures), count, failures[0],
            )
        logger.debug("prebooking %s: %d connections staged to %s", prebooking_id, len(staged), request.url)
        return staged

    async def discard(self, staged: list[StagedRequest]) -> None:
        await asyncio.gather(*(connection.aclose() for connection in staged), return_exceptions=True)

    async def fire(
        self,
        request: BookRequest,
        staged: list[StagedRequest],
        target_ns: int,
        *,
        prebooking_id: object,
        trace_parent: SpanContext | None = None,
    ) -> FireResult:
        """Fire at ``target_ns``, retry "too early" on the spares, and return what happened.

        ``trace_parent`` is the span under which a fallback send with httpx is traced.
        """
        spares = list(staged)
        max_attempts = 1 + self._settings.too_early_retries
        spacing_ns = round(self._settings.too_early_spacing_ms * 1_000_000)
        first_sent_ns: int | None = None
        answer: BookAnswer | None = None
        response: StagedResponse | None = None
        error: str | None = None
        fallbacks = 0
        attempts = 0

        try:
            for attempt in range(max_attempts):
                attempt_target_ns = target_ns if attempt == 0 else max(time.time_ns(), target_ns) + spacing_ns
                connection = spares.pop(0) if spares else None
                attempts += 1

                try:
                    response = await self._send(request, connection, attempt_target_ns, trace_parent)
                except StagingError as exc:
                    error = str(exc)
                    logger.warning("prebooking %s: attempt %d of %d failed: %s", prebooking_id, attempts, max_attempts, exc)
                    continue

                if first_sent_ns is None:
                    first_sent_ns = response.sent_ns
                fallbacks += response.fallback
                answer = parse_book_answer(response.status_code, response.body)
                if answer.is_final:
                    break
                if attempt + 1 < max_attempts:
                    logger.warning(
                        "prebooking %s: AimHarder answered too early (%s) on attempt %d of %d; firing again in %.1f ms",
                        prebooking_id, answer.error_code, attempts, max_attempts, spacing_ns / 1e6,
                    )
        finally:
            await self.discard(spares)

        return FireResult(
            target_ns=target_ns,
            answer=answer,
            first_sent_ns=first_sent_ns,
            response_ms=None if response is None else (response.received_ns - response.sent_ns) / 1e6,
            received_ns=None if response is None else response.received_ns,
            attempts=attempts,
            fallbacks=fallbacks,
            error=None if answer is not None else error,
        )

    async def fire_again(self, request: BookRequest, previous: FireResult, *, prebooking_id: object) -> FireResult:
        """Send one more attempt at once with httpx, after a re-login gave the request new cookies.

        The result keeps the first attempt's send time, so ``fire_latency_us`` still
        measures the fire at the instant. A network error keeps the previous answer.
        """
        timeout_s = self._settings.aimharder_timeout_s
        try:
            response = await send_fresh(request.url, headers=request.headers, body=request.body, timeout_s=timeout_s, client=self._http)
        except StagingError as exc:
            logger.warning("prebooking %s: attempt %d after the re-login failed: %s", prebooking_id, previous.attempts + 1, exc)
            return replace(previous, attempts=previous.attempts + 1, fallbacks=previous.fallbacks + 1)

        return replace(
            previous,
            answer=parse_book_answer(response.status_code, response.body),
            first_sent_ns=previous.first_sent_ns if previous.first_sent_ns is not None else response.sent_ns,
            response_ms=(response.received_ns - response.sent_ns) / 1e6,
            received_ns=response.received_ns,
            attempts=previous.attempts + 1,
            fallbacks=previous.fallbacks + 1,
            error=None,
        )

    async def _send(
        self, request: BookRequest, connection: StagedRequest | None, target_ns: int, trace_parent: SpanContext | None
    ) -> StagedResponse:
        timeout_s = self._settings.aimharder_timeout_s
        if connection is not None:
            try:
                outcome = await self._clock.add(target_ns, connection)
                if outcome.fired:
                    return await connection.read_response(timeout_s)
                logger.warning("staged connection to %s was closed by the server; sending with httpx", request.url)
            finally:
                await connection.aclose()
        else:
            await wait_until(target_ns, guard_ns=self._clock.guard_ns)

        token = None if trace_parent is None else otel_context.attach(trace.set_span_in_context(NonRecordingSpan(trace_parent)))
        try:
            return await send_fresh(request.url, headers=request.headers, body=request.body, timeout_s=timeout_s, client=self._http)
        finally:
            if token is not None:
                otel_context.detach(token)

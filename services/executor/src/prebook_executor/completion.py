"""Storing a booking's outcome and publishing ``prebooking.completed``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from faststream.nats import NatsBroker
from opentelemetry import trace
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.errors import PublishError
from prebook_common.events import PrebookingCompleted
from prebook_common.settings import Settings
from prebook_common.streams import publish_event
from prebook_executor.claims import ClaimStore, Outcome
from prebook_executor.retrying import retry_until_done

if TYPE_CHECKING:
    from prebook_executor.timeline import PrepareFacts, Timeline

logger = logging.getLogger(__name__)


class CompletionWriter:
    def __init__(self, settings: Settings, claims: ClaimStore, broker: NatsBroker, tracer: trace.Tracer) -> None:
        self._settings = settings
        self._tracer = tracer
        self._claims = claims
        self._broker = broker

    async def write(self, event: PrepareFacts, outcome: Outcome, timeline: Timeline) -> None:
        """Store ``outcome``, log and trace it, then publish it; storing and publishing retry until done."""
        prebooking_id = event.prebooking_id
        stored = await retry_until_done(
            lambda: self._claims.store_outcome(prebooking_id, outcome),
            what=f"storing the outcome of prebooking {prebooking_id}",
            retry_on=(SQLAlchemyError, OSError),
        )
        if not stored:
            logger.warning("prebooking %s: outcome %s not stored, the row moved on meanwhile", prebooking_id, outcome.status)

        trace_id = timeline.record_spans(outcome, self._tracer)
        logger.info(
            "prebooking %s %s: bookState %s, booking id %s, fire latency %s us, response %s ms, attempts %d%s; %s; trace %s",
            prebooking_id, outcome.status, outcome.book_state, outcome.booking_id, outcome.fire_latency_us,
            None if outcome.response_ms is None else f"{outcome.response_ms:.1f}", outcome.attempts,
            f", error {outcome.error_code}: {outcome.error_message}" if outcome.error_code else "",
            timeline.describe(), trace_id,
        )

        completed = PrebookingCompleted(
            prebooking_id=prebooking_id,
            status=outcome.status,
            book_state=outcome.book_state,
            booking_id=outcome.booking_id,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            fired_at_ms=None if outcome.fired_at_ns is None else outcome.fired_at_ns // 1_000_000,
            fire_latency_us=outcome.fire_latency_us,
            response_ms=outcome.response_ms,
            attempts=outcome.attempts,
        )
        await retry_until_done(
            lambda: publish_completed(self._broker, self._settings, completed, event.execute_at_ms),
            what=f"publishing the completion of prebooking {prebooking_id}",
            retry_on=(PublishError,),
        )


async def publish_completed(broker: NatsBroker, settings: Settings, completed: PrebookingCompleted, execute_at_ms: int) -> None:
    await publish_event(broker, settings, completed, message_id=f"{completed.prebooking_id}:{execute_at_ms}:completed")

"""One booking's instants, turned into its trace spans and its timing log line.

The spans are created after the outcome is known, with explicit start and end times,
so tracing adds no work between parking and the answer. The booking span is a child
of the span that was current when the prepare event was handled (FastStream's process
span, whose parent is the gateway's publish), so the whole booking is one trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode

from prebook_common import telemetry
from prebook_common.events import PrebookingPrepare
from prebook_executor.claims import Outcome
from prebook_executor.firing import FireResult


@dataclass(frozen=True, slots=True)
class PrepareFacts:
    """The fields of a prepare event that a booking's timeline and outcome use.

    A parked booking keeps this in place of the pydantic event, which takes about
    1.2 KB more.
    """

    prebooking_id: UUID
    execute_at_ms: int
    received_at_ns: int
    verified_at_ns: int | None

    @classmethod
    def of(cls, event: PrebookingPrepare) -> PrepareFacts:
        return cls(event.prebooking_id, event.execute_at_ms, event.received_at_ns, event.verified_at_ns)


@dataclass(slots=True)
class Timeline:
    """Epoch-nanosecond instants of one booking, filled in as it goes."""

    event: PrepareFacts
    target_ns: int
    consumed_ns: int = field(default_factory=time.time_ns)
    loaded_ns: int | None = None
    parked_ns: int | None = None
    fire: FireResult | None = None
    answered_ns: int | None = None
    # The span the booking's spans descend from. Only its ids are kept, because a parked
    # booking that held an OpenTelemetry context would keep a dict and a span object too.
    parent: SpanContext = field(default_factory=lambda: trace.get_current_span().get_span_context())

    def parent_context(self) -> otel_context.Context:
        """Return an OpenTelemetry context whose current span is ``parent``."""
        return trace.set_span_in_context(NonRecordingSpan(self.parent))

    def mark_loaded(self) -> None:
        self.loaded_ns = time.time_ns()

    def mark_parked(self) -> None:
        self.parked_ns = time.time_ns()

    def mark_fired(self, result: FireResult) -> None:
        self.fire = result
        self.answered_ns = time.time_ns()

    def record_spans(self, outcome: Outcome, tracer: trace.Tracer) -> str | None:
        """Create the booking's spans with ``tracer`` and return its trace id (hex), or None when not traced."""
        prebooking_id = str(self.event.prebooking_id)
        end_ns = time.time_ns()

        booking = tracer.start_span(
            "prebook.booking",
            context=self.parent_context(),
            start_time=self.consumed_ns,
            attributes={telemetry.PREBOOKING_ID: prebooking_id, telemetry.TARGET: _iso(self.target_ns), "prebook.status": str(outcome.status)},
        )
        if outcome.error_code:
            booking.set_attribute("prebook.error_code", outcome.error_code)
        inside = trace.set_span_in_context(booking)

        if self.loaded_ns is not None:
            tracer.start_span("prebook.load", context=inside, start_time=self.consumed_ns).end(end_time=self.loaded_ns)
        if self.loaded_ns is not None and self.parked_ns is not None:
            tracer.start_span("prebook.stage", context=inside, start_time=self.loaded_ns).end(end_time=self.parked_ns)

        fire = self.fire
        if fire is not None and fire.first_sent_ns is not None and self.parked_ns is not None:
            wait_ms = (fire.first_sent_ns - self.parked_ns) / 1e6
            tracer.start_span(
                "prebook.wait", context=inside, start_time=self.parked_ns, attributes={telemetry.WAIT_MS: wait_ms}
            ).end(end_time=fire.first_sent_ns)

            fire_attributes = {
                telemetry.PREBOOKING_ID: prebooking_id,
                telemetry.TARGET: _iso(self.target_ns),
                telemetry.FIRE_LATENCY_US: fire.fire_latency_us,
                telemetry.WAIT_MS: wait_ms,
                "prebook.attempts": fire.attempts,
                "prebook.fallbacks": fire.fallbacks,
            }
            if fire.answer is not None and fire.answer.book_state is not None:
                fire_attributes[telemetry.BOOK_STATE] = fire.answer.book_state
            if fire.response_ms is not None:
                fire_attributes[telemetry.RESPONSE_MS] = fire.response_ms
            fire_span = tracer.start_span("prebook.fire", context=inside, start_time=fire.first_sent_ns, attributes=fire_attributes)
            fire_end_ns = self.answered_ns or end_ns
            if fire.received_ns is not None:
                answer = tracer.start_span(
                    "aimharder.answer",
                    context=trace.set_span_in_context(fire_span),
                    start_time=fire.received_ns,
                    attributes={"aimharder.outcome": str(fire.answer.outcome) if fire.answer else "none"},
                )
                answer.end(end_time=fire_end_ns)
            fire_span.end(end_time=fire_end_ns)

        if outcome.status == "failed" or outcome.status == "missed":
            booking.set_status(Status(StatusCode.ERROR, outcome.error_code or str(outcome.status)))
        booking.end(end_time=end_ns)

        span_context = booking.get_span_context()
        return format(span_context.trace_id, "032x") if span_context.is_valid else None

    def describe(self) -> str:
        """Describe the timing breakdown for the outcome log line, relative to the gateway's receipt."""
        received_ns = self.event.received_at_ns
        parts = [f"triggered {_clock(received_ns)}"]
        if self.event.verified_at_ns is not None:
            parts.append(f"verified +{(self.event.verified_at_ns - received_ns) / 1e6:.1f} ms")
        if self.loaded_ns is not None:
            parts.append(f"loaded +{(self.loaded_ns - received_ns) / 1e6:.1f} ms")
        if self.parked_ns is not None:
            parts.append(f"parked +{(self.parked_ns - received_ns) / 1e6:.1f} ms")

        fire = self.fire
        if fire is not None and fire.first_sent_ns is not None:
            if self.parked_ns is not None:
                parts.append(f"waited {(fire.first_sent_ns - self.parked_ns) / 1e6:.1f} ms")
            parts.append(f"fired {fire.fire_latency_us} us after the target")
        if fire is not None and fire.response_ms is not None:
            parts.append(f"answered in {fire.response_ms:.1f} ms")
        return ", ".join(parts)


def _iso(epoch_ns: int) -> str:
    return datetime.fromtimestamp(epoch_ns / 1e9, tz=UTC).isoformat(timespec="microseconds")


def _clock(epoch_ns: int) -> str:
    return datetime.fromtimestamp(epoch_ns / 1e9, tz=UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"

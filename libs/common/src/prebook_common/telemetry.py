"""OpenTelemetry tracing for the services.

Every service installs an SDK tracer provider, so trace context crosses HTTP and NATS
and each booking's log line can carry its trace id. Spans are exported over OTLP/HTTP
when ``PREBOOK_OTEL_EXPORTER_OTLP_ENDPOINT`` is set (for example
``http://jaeger:4318``), printed to stderr when ``PREBOOK_OTEL_CONSOLE`` is true, and
otherwise dropped when they end.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from prebook_common.settings import Settings

logger = logging.getLogger(__name__)

TRACER_NAME = "prebook"

# Span attribute names, shared by the services that set them and the tests that read them.
PREBOOKING_ID = "prebook.prebooking_id"
TARGET = "prebook.target"
FIRE_LATENCY_US = "prebook.fire_latency_us"
WAIT_MS = "prebook.wait_ms"
BOOK_STATE = "aimharder.book_state"
RESPONSE_MS = "aimharder.response_ms"


def setup_tracing(
    settings: Settings, service_name: str, *, extra_processors: tuple[SpanProcessor, ...] = ()
) -> TracerProvider:
    """Install a tracer provider for ``service_name`` with the configured exporters."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))

    endpoint = settings.otel_exporter_otlp_endpoint
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    if settings.otel_console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    for processor in extra_processors:
        provider.add_span_processor(processor)

    trace.set_tracer_provider(provider)
    logger.info(
        "tracing for %s: %s", service_name,
        ", ".join(filter(None, [f"OTLP to {endpoint}" if endpoint else "", "console" if settings.otel_console else ""]))
        or "no exporter (set PREBOOK_OTEL_EXPORTER_OTLP_ENDPOINT to send spans)",
    )
    return provider


def nats_middlewares(provider: TracerProvider | None) -> list:
    """FastStream middlewares that carry trace context in NATS headers and trace each message."""
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware

    return [NatsTelemetryMiddleware(tracer_provider=provider or trace.get_tracer_provider())]


def instrument_httpx(client, provider: TracerProvider | None) -> None:
    """Trace ``client``'s requests and send the trace context with them."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider or trace.get_tracer_provider())


def get_tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    """Hex id of the current trace, or None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")

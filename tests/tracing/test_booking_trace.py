"""One booking is one trace: the gateway's callback request down to the executor's fire span."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from prebook_common import telemetry
from prebook_common.db import engine_scope
from prebook_common.migrate import upgrade
from prebook_common.models import FINAL_STATUSES, PrebookingStatus
from prebook_common.settings import Settings
from prebook_executor.app import Executor
from prebook_gateway.app import create_app
from prebook_simulator import SimulatorServer
from support.jetstream import NatsNames
from support.polling import eventually
from support.stack import CURRENT_KEY, ENCRYPTION_KEY, NEXT_KEY, TOKEN_SECRET, Stack, now_ms

GATEWAY_URL = "http://gateway.test"
FIRE_ATTRIBUTES = (
    telemetry.PREBOOKING_ID,
    telemetry.TARGET,
    telemetry.FIRE_LATENCY_US,
    telemetry.WAIT_MS,
    telemetry.BOOK_STATE,
    telemetry.RESPONSE_MS,
)


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer() as server:
        yield server


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _settings(nats_url: str, sqlite_url: str, names: NatsNames, sim_url: str) -> Settings:
    return Settings(
        env="development",
        database_url=sqlite_url,
        nats_url=nats_url,
        nats_stream=names.stream,
        nats_subject_prefix=names.subject_prefix,
        public_url=GATEWAY_URL,
        token_secret=TOKEN_SECRET,
        qstash_current_signing_key=CURRENT_KEY,
        qstash_next_signing_key=NEXT_KEY,
        session_encryption_keys=ENCRYPTION_KEY,
        aimharder_base_url=sim_url,
        session_refresher_enabled=False,
    )


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_booking_is_one_trace(
    nats_url: str, sqlite_url: str, nats_names: NatsNames, simulator: SimulatorServer, spans
) -> None:
    provider, exporter = spans
    settings = _settings(nats_url, sqlite_url, nats_names, simulator.url)
    async with engine_scope(sqlite_url) as engine:
        await upgrade(engine)

    stack = Stack(gateway_url=GATEWAY_URL, sim_url=simulator.url, database_url=sqlite_url, callback_url=settings.callback_url)
    day = date.today() + timedelta(days=4)
    execute_at_ms = now_ms() + 2500
    async with httpx.AsyncClient(base_url=simulator.url) as sim:
        response = await sim.post(
            "/_sim/classes", json={"id": 9001, "day": day.strftime("%Y%m%d"), "capacity": 5, "opens_at_ms": execute_at_ms}
        )
        response.raise_for_status()
    prebooking_id = await stack.create_prebooking(user="tracy@example.com", class_id="9001", class_day=day, execute_at_ms=execute_at_ms)

    app = create_app(settings, tracer_provider=provider)
    executor = Executor(settings, tracer_provider=provider)
    async with app.router.lifespan_context(app):
        await eventually(app.state.gateway.broker_connected, timeout_s=15, message="the gateway never connected to NATS")
        await executor.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=GATEWAY_URL) as gateway:
                body, headers = stack.callback(prebooking_id, execute_at_ms)
                response = await eventually(
                    lambda: _accepted(gateway, body, headers), timeout_s=15, message="the callback was never accepted"
                )

            async def finished():
                row = await stack.get_prebooking(prebooking_id)
                return row if row is not None and row.status in FINAL_STATUSES else None

            row = await eventually(finished, timeout_s=20, message="the prebooking never finished")
        finally:
            await executor.stop()

    assert row.status == PrebookingStatus.BOOKED
    finished_spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished_spans}
    fire = [span for span in finished_spans if span.name == "prebook.fire"]
    assert len(fire) == 1
    fire_span = fire[0]

    for name in FIRE_ATTRIBUTES:
        assert name in fire_span.attributes, name
    assert fire_span.attributes[telemetry.PREBOOKING_ID] == str(prebooking_id)
    assert fire_span.attributes[telemetry.BOOK_STATE] == 1
    assert fire_span.attributes[telemetry.FIRE_LATENCY_US] == row.fire_latency_us

    chain = _ancestors(fire_span, by_id)
    names = [span.name for span in chain]
    assert "prebook.booking" in names
    request = [span for span in chain if span.kind is SpanKind.SERVER]
    assert len(request) == 1
    assert "/v1/qstash/prepare" in request[0].name
    assert chain[-1] is request[0]
    assert {span.context.trace_id for span in chain} == {fire_span.context.trace_id}

    booking = next(span for span in chain if span.name == "prebook.booking")
    children = {span.name for span in finished_spans if span.parent is not None and span.parent.span_id == booking.context.span_id}
    assert {"prebook.load", "prebook.stage", "prebook.wait", "prebook.fire"} <= children
    answer = [span for span in finished_spans if span.name == "aimharder.answer"]
    assert answer[0].parent.span_id == fire_span.context.span_id

    secrets = ("cookie-", TOKEN_SECRET, CURRENT_KEY)
    for span in finished_spans:
        for value in span.attributes.values():
            for secret in secrets:
                assert secret not in str(value), (span.name, value)


async def _accepted(gateway: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response | None:
    response = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)
    return response if response.status_code == 202 else None

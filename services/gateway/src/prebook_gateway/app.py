"""The gateway's FastAPI application and its start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from starlette.types import Receive, Scope, Send

from prebook_common import telemetry
from prebook_common.crypto import SecretBox
from prebook_common.db import create_engine, session_factory
from prebook_common.migrate import upgrade
from prebook_common.models import utcnow
from prebook_common.settings import Settings, get_settings
from prebook_common.signatures import QStashVerifier
from prebook_common.streams import broker_connected, connect_with_retry, create_broker, ensure_stream
from prebook_gateway import body_limit, callback, health
from prebook_gateway.aimharder_client import create_http_client
from prebook_gateway.api_errors import install_error_handlers
from prebook_gateway.callback_fast_path import is_callback, serve_callback
from prebook_gateway.publishing import EventPublisher
from prebook_gateway.routes import bookings, boxes, prebookings, sessions, users
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)


class GatewayApp(FastAPI):
    """The FastAPI app, except for the QStash callback, which skips the middleware stack (callback_fast_path.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_callback(scope):
            scope["app"] = self
            await serve_callback(self.state.gateway, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    tracer_provider: TracerProvider | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the gateway. ``clock`` returns the current UTC time; tests may pin it.

    With ``freeze_gc``, a gateway process freezes its objects for the garbage collector
    once started, as ``prebook gateway`` does.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        await upgrade(engine)

        # No FastStream telemetry middleware: publish_traced puts the trace context in each message.
        broker = create_broker(settings)
        tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(telemetry.TRACER_NAME)
        publisher = EventPublisher(broker, settings, lambda: broker_connected(broker))
        aimharder_http = create_http_client(settings.aimharder_timeout_s, settings.connect_timeout_s)
        telemetry.instrument_httpx(aimharder_http, tracer_provider)
        state = app.state.gateway = GatewayState(
            settings=settings,
            broker=broker,
            engine=engine,
            verifier=QStashVerifier(
                settings.qstash_current_signing_key.get_secret_value(),
                settings.qstash_next_signing_key.get_secret_value(),
                settings.callback_url,
                clock_tolerance_s=settings.qstash_clock_tolerance_s,
            ),
            sessions=session_factory(engine),
            aimharder_http=aimharder_http,
            secret_box=SecretBox(settings.session_encryption_keys.get_secret_value()),
            publisher=publisher,
            tracer=tracer,
            clock=clock,
        )

        # Serve at once; callbacks answer 503 until NATS is connected, and QStash retries.
        connecting = asyncio.create_task(_connect(broker, settings))
        logger.info("gateway started; QStash callback URL is %s", settings.callback_url)
        if freeze_gc:
            # Objects from the imports and the start live until the exit. Frozen, they are left out
            # of later collections, so a full collection does not pause a callback while it scans them.
            gc.freeze()
            logger.debug("garbage collector: %d objects frozen after the start", gc.get_freeze_count())
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await publisher.aclose()
            await state.prebooking_lookup.aclose()
            await aimharder_http.aclose()
            await broker.stop()
            await engine.dispose()
            logger.info("gateway stopped")

    app = GatewayApp(
        title="Prebook gateway",
        summary="Books AimHarder classes at the instant their booking window opens.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(body_limit.BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # No spans for each ASGI receive and send message: they were three of the six spans
    # of a callback and add nothing that the request's span does not show.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider or trace.get_tracer_provider(),
        excluded_urls="/healthz,/readyz",
        exclude_spans=["receive", "send"],
    )
    app.include_router(health.router)
    app.include_router(callback.router)
    app.include_router(users.router)
    app.include_router(boxes.router)
    app.include_router(prebookings.router)
    app.include_router(bookings.router)
    app.include_router(sessions.router)
    return app


async def _connect(broker, settings: Settings) -> None:
    await connect_with_retry(broker, settings)
    await ensure_stream(broker, settings)

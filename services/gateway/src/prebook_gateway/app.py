"""The gateway's FastAPI application and its start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from prebook_common.db import create_engine
from prebook_common.migrate import upgrade
from prebook_common.settings import Settings, get_settings
from prebook_common.signatures import QStashVerifier
from prebook_common.streams import connect_with_retry, create_broker, ensure_stream
from prebook_gateway import callback, health
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        await upgrade(engine)

        broker = create_broker(settings)
        app.state.gateway = GatewayState(
            settings=settings,
            broker=broker,
            engine=engine,
            verifier=QStashVerifier(
                settings.qstash_current_signing_key.get_secret_value(),
                settings.qstash_next_signing_key.get_secret_value(),
                settings.callback_url,
                clock_tolerance_s=settings.qstash_clock_tolerance_s,
            ),
        )

        # Serve at once; callbacks answer 503 until NATS is connected, and QStash retries.
        connecting = asyncio.create_task(_connect(broker, settings))
        logger.info("gateway started; QStash callback URL is %s", settings.callback_url)
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await broker.stop()
            await engine.dispose()
            logger.info("gateway stopped")

    app = FastAPI(
        title="Prebook gateway",
        summary="Books AimHarder classes at the instant their booking window opens.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(callback.router)
    return app


async def _connect(broker, settings: Settings) -> None:
    await connect_with_retry(broker, settings)
    await ensure_stream(broker, settings)

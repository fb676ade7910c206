"""Run the gateway in the foreground: ``prebook gateway``.

uvicorn serves the app on uvloop with the httptools parser. With
PREBOOK_GATEWAY_WORKERS above 1, that many worker processes serve the one port, each
on a listening socket of its own (``workers.py``), and each builds its own app with
``worker_app``: its own NATS connection, database pool and
PREBOOK_MAX_CALLBACKS_IN_FLIGHT. The supervisor migrates the database once before the
workers start, so they do not run the migrations at the same time. SIGTERM or SIGINT
stops every worker, each after the requests it is handling.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from prebook_common.db import engine_scope
from prebook_common.log import setup_logging
from prebook_common.migrate import upgrade
from prebook_common.settings import get_settings
from prebook_common.telemetry import setup_tracing
from prebook_gateway.app import create_app
from prebook_gateway.workers import run_workers

logger = logging.getLogger(__name__)

# Import string of the app factory, which uvicorn calls in each worker process.
WORKER_APP = "prebook_gateway.main:worker_app"


def serve() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    asyncio.run(_migrate(settings.database_url))
    logger.info(
        "gateway serving on %s:%d with %d worker processes (PREBOOK_GATEWAY_WORKERS)",
        settings.gateway_host, settings.gateway_port, settings.gateway_workers,
    )
    options = {"loop": "uvloop", "http": "httptools", "log_config": None, "access_log": False}
    if settings.gateway_workers == 1:
        uvicorn.run(WORKER_APP, factory=True, host=settings.gateway_host, port=settings.gateway_port, **options)
        return

    status = run_workers(WORKER_APP, settings.gateway_host, settings.gateway_port, settings.gateway_workers, **options)
    if status:
        sys.exit(status)


def worker_app() -> FastAPI:
    """Build the app of one worker process, with its logging and tracing (uvicorn's factory)."""
    settings = get_settings()
    setup_logging(settings.log_level)
    provider = setup_tracing(settings, "prebook-gateway")
    app = create_app(settings, tracer_provider=provider, freeze_gc=True)
    serving = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with serving(app):
                yield
        finally:
            # Sends the spans still waiting in the exporters' batches.
            provider.shutdown()

    app.router.lifespan_context = lifespan
    return app


async def _migrate(database_url: str) -> None:
    async with engine_scope(database_url) as engine:
        await upgrade(engine)

"""Run the scheduler in the foreground: ``prebook scheduler``."""

from __future__ import annotations

import asyncio
import signal

from prebook_common.log import setup_logging
from prebook_common.settings import Settings, get_settings
from prebook_common.telemetry import setup_tracing
from prebook_scheduler.app import Scheduler


def serve() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    asyncio.run(run(settings))


async def run(settings: Settings) -> None:
    """Run the scheduler until SIGINT or SIGTERM."""
    provider = setup_tracing(settings, "prebook-scheduler")
    scheduler = Scheduler(settings, tracer_provider=provider)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    await scheduler.start()
    try:
        await stop.wait()
    finally:
        await scheduler.stop()
        provider.shutdown()

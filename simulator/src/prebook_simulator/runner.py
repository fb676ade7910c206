"""Run the simulator in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from prebook_simulator.server import SimulatorServer

logger = logging.getLogger(__name__)


def serve(host: str, port: int) -> None:
    """Serve on ``host``:``port`` and block until SIGINT or SIGTERM, then stop cleanly.

    Logging is configured by the caller. Once listening, the server logs
    "AimHarder simulator listening on http://HOST:PORT" at INFO.
    """
    asyncio.run(_serve_until_signal(host, port))


async def _serve_until_signal(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop_requested.set)

    try:
        async with SimulatorServer(host, port):
            await stop_requested.wait()
            logger.info("Stopping the AimHarder simulator after a stop signal")
    finally:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)

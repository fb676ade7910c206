"""Run the gateway in the foreground: ``prebook gateway``."""

from __future__ import annotations

import uvicorn

from prebook_common.log import setup_logging
from prebook_common.settings import get_settings
from prebook_common.telemetry import setup_tracing
from prebook_gateway.app import create_app


def serve() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    provider = setup_tracing(settings, "prebook-gateway")
    try:
        uvicorn.run(
            create_app(settings, tracer_provider=provider),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,
            access_log=False,
        )
    finally:
        provider.shutdown()

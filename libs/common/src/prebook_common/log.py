"""Logging set-up shared by the services: one line per record, millisecond timestamps."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

# Libraries whose DEBUG output drowns ours and can include request headers, and
# FastStream's broker logger, which logs every message and task restart at INFO.
QUIET_LOGGERS = ("httpx", "httpcore", "asyncio", "aiosqlite", "sqlalchemy.engine", "nats", "alembic", "prebook.faststream")


def setup_logging(level: str | int = "INFO") -> None:
    """Send every log record to stderr in one format; safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))

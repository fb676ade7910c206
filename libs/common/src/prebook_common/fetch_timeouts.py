"""Quieting FastStream's ERROR for a pull fetch that timed out, which is not an error.

nats-py's ``fetch`` raises the built-in ``TimeoutError`` when a batch fetch ends with
no message (nats-py 2.x, ``_fetch_n``), while FastStream's pull loop suppresses only
``nats.errors.TimeoutError``. The built-in error escapes the loop, FastStream's task
supervisor restarts the loop, and it logs the traceback at ERROR with advice to open an
issue upstream. No message is lost, because the fetch that timed out returned none, and
the restarted loop fetches again. This filter turns that one record into a DEBUG line
and lets every other record through.
"""

from __future__ import annotations

import logging

_RESTART_MESSAGE = "raised an exception, retrying"


class FetchTimeoutFilter(logging.Filter):
    """Rewrite FastStream's restart record for a fetch timeout to DEBUG, or drop it when DEBUG is off."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.exc_info:
            return True
        error = record.exc_info[1]
        if type(error) is not TimeoutError or _RESTART_MESSAGE not in str(record.msg):
            return True

        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        record.msg = "pull consumer fetch timed out with no message; FastStream restarted its fetch loop"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def install(logger: logging.Logger) -> None:
    """Add one FetchTimeoutFilter to ``logger``."""
    if not any(isinstance(existing, FetchTimeoutFilter) for existing in logger.filters):
        logger.addFilter(FetchTimeoutFilter())

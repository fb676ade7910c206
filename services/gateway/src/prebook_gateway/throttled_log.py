"""Log lines that could repeat without bound, at most one per reason per interval."""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    """WARNING lines throttled per reason: the first is logged, then at most one per ``interval_s``.

    Each logged line counts the lines of its reason skipped since the previous one.
    """

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last_logged: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, reason: str, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING unless ``reason`` was logged less than ``interval_s`` ago.

        The line ends with the number of lines of the same reason skipped since the last one.
        """
        now = time.monotonic()
        last = self._last_logged.get(reason)
        if last is not None and now - last < self._interval_s:
            self._skipped[reason] = self._skipped.get(reason, 0) + 1
            return

        skipped = self._skipped.pop(reason, 0)
        self._last_logged[reason] = now
        self._logger.warning(message + " (%d more like it skipped in the last %.0f s)", *args, skipped, self._interval_s)

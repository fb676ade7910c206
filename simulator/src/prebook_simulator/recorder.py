"""The log of AimHarder API requests, with their arrival stamps and responses."""

from __future__ import annotations

import itertools
from typing import Any

from prebook_simulator.messages import Request, Response


class RequestLog:
    """Recorded requests in the order the simulator decided their responses.

    NOTE: the log grows until POST /_sim/reset, so a long benchmark run holds every
    request in memory.
    """

    def __init__(self) -> None:
        self._sequence = itertools.count(1)
        self._records: list[dict[str, Any]] = []

    def clear(self) -> None:
        self._sequence = itertools.count(1)
        self._records.clear()

    def record(self, request: Request, response: Response) -> dict[str, Any]:
        entry = {
            "seq": next(self._sequence),
            "connection": request.connection_id,
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "form": request.form(),
            "json": request.json_if_declared(),
            "cookies": request.cookies(),
            "headers": request.header_map(),
            "arrival_ns": request.arrival_ns,
            "stamp_source": request.stamp_source,
            "status": response.status,
            "answer": response.body,
        }
        self._records.append(entry)
        return entry

    def entries(self, path: str | None = None) -> list[dict[str, Any]]:
        """Return the recorded requests, only those for ``path`` when it is given."""
        if path is None:
            return list(self._records)

        return [entry for entry in self._records if entry["path"] == path]

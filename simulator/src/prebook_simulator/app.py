"""Dispatch of each request to the AimHarder API or the control API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prebook_simulator.api import BoxApi
from prebook_simulator.config import SimulatorConfig
from prebook_simulator.control import PREFIX as CONTROL_PREFIX
from prebook_simulator.control import ControlApi
from prebook_simulator.login import LoginApi
from prebook_simulator.messages import Request, Response, json_error
from prebook_simulator.recorder import RequestLog
from prebook_simulator.state import SimulatorState

logger = logging.getLogger(__name__)

ApiHandler = Callable[[Request, int], Response]


class Simulator:
    """The simulated AimHarder service: state, configuration, request log and routes.

    Requests outside ``/_sim/`` are recorded with their response. Only ``/api/``
    responses wait for the configured delay, which starts once the response is decided.
    """

    def __init__(self) -> None:
        self.config = SimulatorConfig()
        self.state = SimulatorState()
        self.log = RequestLog()
        self.control = ControlApi(self.state, self.config, self.log)

        box_api = BoxApi(self.state, self.config)
        login_api = LoginApi(self.state, self.config)
        self._api_routes: dict[str, dict[str, ApiHandler]] = {
            "/api/book": {"POST": box_api.book},
            "/api/bookings": {"GET": box_api.list_bookings},
            "/api/cancelBook": {"POST": box_api.cancel},
            "/api/login": {"POST": login_api.login},
            "/api/tokenUpdate": {"POST": login_api.update_token},
        }

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith(CONTROL_PREFIX):
            return self.control.handle(request)

        # The simulator's clock is real time plus the offset, read at the arrival stamp.
        now_ns = request.arrival_ns + self.config.clock_offset_ns
        response = self._answer_api(request, now_ns)
        self.log.record(request, response)
        # The body is left out of the log line because login responses contain a token.
        logger.debug(
            "%s %s from connection %s got HTTP %s", request.method, path, request.connection_id, response.status
        )

        if path.startswith("/api/") and self.config.delay_ms > 0:
            await asyncio.sleep(self.config.delay_ms / 1000)

        return response

    def _answer_api(self, request: Request, now_ns: int) -> Response:
        methods = self._api_routes.get(request.path)
        if methods is None:
            return json_error(404, f"no route {request.path}. The AimHarder routes are {sorted(self._api_routes)}")

        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            response = json_error(405, f"{request.path} does not accept {request.method}. Use {allowed}")
            response.headers.append(("allow", allowed))
            return response

        return handler(request, now_ns)

"""Fixtures that start the simulator in-process on a free loopback port.

The ``sim`` fixture is a ``SimulatorDriver``: an httpx client for the server plus
helpers that set up classes and sessions through the control API and send AimHarder
requests the way AimHarder's web client does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from prebook_simulator import SimulatorServer

DAY = "20261208"
USER = "ana@example.com"
COOKIE = "cookie-ana"


class SimulatorDriver:
    """A running simulator server and an httpx client pointed at it."""

    day = DAY
    user = USER
    cookie = COOKIE

    def __init__(self, server: SimulatorServer, client: httpx.AsyncClient) -> None:
        self.server = server
        self.client = client

    async def add_class(self, **fields: Any) -> dict[str, Any]:
        """Create a class. Defaults: id 1, DAY, capacity 10, open now."""
        body = {"id": 1, "day": DAY, "capacity": 10, "opens_at_ms": None, **fields}
        response = await self.client.post("/_sim/classes", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def add_session(self, user: str = USER, cookie: str = COOKIE, **fields: Any) -> dict[str, Any]:
        """Create a session that never expires unless ``expires_at_ms`` is given."""
        body = {"user": user, "cookie": cookie, "expires_at_ms": None, **fields}
        response = await self.client.post("/_sim/sessions", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def configure(self, **settings: Any) -> dict[str, Any]:
        response = await self.client.put("/_sim/config", json=settings)
        assert response.status_code == 200, response.text
        return response.json()

    async def book(
        self,
        cookie: str | None = COOKIE,
        *,
        class_id: int = 1,
        day: str = DAY,
        insist: int = 0,
        family_id: str = "",
    ) -> httpx.Response:
        form = {"id": str(class_id), "day": day, "insist": str(insist), "familyId": family_id}
        return await self.client.post("/api/book", data=form, headers=self.headers(cookie))

    async def recorded(self, path: str | None = None) -> list[dict[str, Any]]:
        params = {"path": path} if path else {}
        response = await self.client.get("/_sim/requests", params=params)
        assert response.status_code == 200, response.text
        return response.json()["requests"]

    @staticmethod
    def headers(cookie: str | None = COOKIE) -> dict[str, str]:
        headers = {"X-Requested-With": "XMLHttpRequest"}
        if cookie is not None:
            headers["Cookie"] = f"amhrdrauth={cookie}"
        return headers


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def sim(simulator: SimulatorServer) -> AsyncIterator[SimulatorDriver]:
    async with httpx.AsyncClient(base_url=simulator.url) as client:
        yield SimulatorDriver(simulator, client)

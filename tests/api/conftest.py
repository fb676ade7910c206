"""Fixtures for the REST API tests: the gateway in-process, NATS events and the simulator.

The gateway runs as its real FastAPI app with its lifespan, on this test's database
(SQLite and Postgres) and JetStream stream, reached through httpx's ASGI transport.
AimHarder is the simulator on a loopback port.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from prebook_common.crypto import SecretBox
from prebook_common.models import AimharderSession
from prebook_common.settings import Settings
from prebook_gateway.app import create_app
from prebook_gateway.state import GatewayState
from prebook_simulator import SimulatorServer
from support.jetstream import NatsNames
from support.polling import eventually
from support.stack import ENCRYPTION_KEY

ADMIN_KEY = "admin-key-for-api-tests-0123456789abcdef"
WAIT_S = 15.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Event:
    subject: str
    message_id: str | None
    data: dict[str, Any]


class EventReader:
    """Reads this test's stream from its first message, in order, with an ordered consumer."""

    def __init__(self, nats_url: str, names: NatsNames) -> None:
        self._nats_url = nats_url
        self._names = names
        self._client = None
        self._subscription = None

    async def _subscribe(self) -> None:
        if self._subscription is not None:
            return
        self._client = await nats.connect(self._nats_url, connect_timeout=5, allow_reconnect=False)
        jetstream = self._client.jetstream(timeout=5)
        self._subscription = await jetstream.subscribe(
            self._names.subjects, stream=self._names.stream, ordered_consumer=True
        )

    async def next(self, timeout_s: float = WAIT_S) -> Event:
        await self._subscribe()
        message = await self._subscription.next_msg(timeout=timeout_s)
        headers = message.headers or {}
        return Event(subject=message.subject, message_id=headers.get("Nats-Msg-Id"), data=json.loads(message.data))

    async def stream_messages(self) -> int:
        """Number of messages in the stream now."""
        await self._subscribe()
        info = await self._client.jetstream(timeout=5).stream_info(self._names.stream)
        return info.state.messages

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@dataclass
class Gateway:
    """The gateway app in-process and a client for it."""

    app: Any
    client: httpx.AsyncClient
    settings: Settings
    names: NatsNames

    @property
    def state(self) -> GatewayState:
        return self.app.state.gateway

    async def create_user_key(self, email: str, name: str | None = None) -> str:
        response = await self.client.post("/v1/users", json={"email": email}, headers=bearer(ADMIN_KEY))
        assert response.status_code in (201, 409), response.text
        response = await self.client.post(
            f"/v1/users/{email}/keys", json={"name": name} if name else {}, headers=bearer(ADMIN_KEY)
        )
        assert response.status_code == 201, response.text
        return response.json()["key"]

    async def put_box(self, subdomain: str, **fields: Any) -> httpx.Response:
        body = {"aimharder_id": "4242", "timezone": "Europe/Madrid", **fields}
        if "window_days" not in body and "window_hours" not in body:
            body["window_days"] = 4
        response = await self.client.put(f"/v1/boxes/{subdomain}", json=body, headers=bearer(ADMIN_KEY))
        assert response.status_code in (200, 201), response.text
        return response

    async def store_session(self, email: str, cookies: dict[str, str]) -> None:
        """Store the user's AimHarder session row directly, as PUT /v1/sessions would."""
        async with self.state.sessions() as session:
            session.add(
                AimharderSession(
                    user_email=email, cookies_encrypted=SecretBox(ENCRYPTION_KEY).encrypt_json(cookies)
                )
            )
            await session.commit()


def gateway_settings(nats_url: str, database_url: str, names: NatsNames, aimharder_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "development",
        "database_url": database_url,
        "nats_url": nats_url,
        "nats_stream": names.stream,
        "nats_subject_prefix": names.subject_prefix,
        "nats_publish_timeout_s": 2.0,
        "admin_api_key": ADMIN_KEY,
        "session_encryption_keys": ENCRYPTION_KEY,
        "aimharder_base_url": aimharder_url,
        "aimharder_login_url": aimharder_url,
        "aimharder_timeout_s": 5.0,
        **overrides,
    }
    return Settings(**values)


async def _stream_exists(nats_url: str, stream: str) -> bool:
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        await client.jetstream(timeout=5).stream_info(stream)
        return True
    except NotFoundError:
        return False
    finally:
        await client.close()


@asynccontextmanager
async def running_gateway(
    settings: Settings, names: NatsNames, *, clock: Callable[[], datetime] | None = None, wait_for_stream: bool = True
) -> AsyncIterator[Gateway]:
    """Run the gateway's lifespan; with ``wait_for_stream``, until JetStream is ready."""
    app = create_app(settings, **({"clock": clock} if clock else {}))
    async with app.router.lifespan_context(app):
        state: GatewayState = app.state.gateway
        if wait_for_stream:
            await eventually(state.broker_connected, timeout_s=WAIT_S, message="the gateway never connected to NATS")
            await eventually(
                lambda: _stream_exists(settings.nats_url, names.stream),
                timeout_s=WAIT_S,
                message=f"the gateway never created stream {names.stream}",
            )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield Gateway(app=app, client=client, settings=settings, names=names)


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def sim(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """Client of the simulator's control API."""
    async with httpx.AsyncClient(base_url=simulator.url, trust_env=False) as client:
        yield client


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    nats_url: str, database_url: str, nats_names: NatsNames, simulator: SimulatorServer
) -> AsyncIterator[GatewayFactory]:
    """Start the gateway with optional ``clock`` and settings overrides; stopped after the test."""
    async with AsyncExitStack() as stack:

        async def start(*, clock: Callable[[], datetime] | None = None, **overrides: Any) -> Gateway:
            settings = gateway_settings(nats_url, database_url, nats_names, simulator.url, **overrides)
            return await stack.enter_async_context(running_gateway(settings, nats_names, clock=clock))

        yield start


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def events(nats_url: str, nats_names: NatsNames) -> AsyncIterator[EventReader]:
    reader = EventReader(nats_url, nats_names)
    yield reader
    await reader.close()

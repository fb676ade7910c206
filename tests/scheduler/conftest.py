"""Fixtures for the scheduler tests: rows, events, a callback receiver, a QStash stand-in.

The scheduler runs in the test's event loop (``schedulers``) or as a ``prebook
scheduler`` process (``service_processes``), always on the test's own NATS stream and
database. Local deliveries are signed for ``PUBLIC_URL`` but posted to the receiver,
so every test also checks that the signature names the public URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callback_receiver import CallbackReceiver
from fake_qstash import FakeQStash
from prebook_common.migrate import upgrade
from prebook_common.streams import ensure_stream
from scheduler_support import SIGNED_URL, EventPublisher, PrebookingRows, RunningSchedulers, make_settings
from support.jetstream import NatsNames
from support.stack import CURRENT_KEY, NEXT_KEY


@pytest.fixture
async def rows(database_url: str) -> AsyncIterator[PrebookingRows]:
    prebooking_rows = PrebookingRows(database_url)
    await upgrade(prebooking_rows.engine)
    yield prebooking_rows
    await prebooking_rows.engine.dispose()


@pytest.fixture
async def publisher(nats_url: str, nats_names: NatsNames) -> AsyncIterator[EventPublisher]:
    event_publisher = EventPublisher(make_settings(nats_url, "sqlite+aiosqlite://", nats_names))
    await event_publisher.broker.connect()
    await ensure_stream(event_publisher.broker, event_publisher.settings)
    yield event_publisher
    await event_publisher.broker.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    callback_receiver = CallbackReceiver(current_key=CURRENT_KEY, next_key=NEXT_KEY, signed_url=SIGNED_URL)
    await callback_receiver.start()
    yield callback_receiver
    await callback_receiver.aclose()


@pytest.fixture
async def fake_qstash() -> AsyncIterator[FakeQStash]:
    server = FakeQStash()
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
async def schedulers() -> AsyncIterator[RunningSchedulers]:
    running = RunningSchedulers()
    yield running
    await running.stop_all()

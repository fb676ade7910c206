"""Tests of the JetStream stream and of publish_event against a real NATS server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from faststream.nats import NatsBroker
from nats.js.api import StorageType

from prebook_common.errors import PublishError
from prebook_common.events import PrebookingPrepare
from prebook_common.settings import Settings
from prebook_common.streams import (
    broker_connected,
    connect_with_retry,
    create_broker,
    ensure_stream,
    publish_event,
)
from support.jetstream import new_nats_names
from support.polling import eventually
from support.ports import free_port
from support.servers import NatsServerProcess

T = TypeVar("T")

# Bound on every wait for NATS, so a hang fails the test instead of stalling the run.
WAIT_S = 10.0
# How long a test lets a connection to a closed port try before it gives up on it.
UNREACHABLE_WAIT_S = 5.0


def _prepare_event(execute_at_ms: int = 1_767_938_400_000) -> PrebookingPrepare:
    return PrebookingPrepare(
        prebooking_id=uuid.uuid4(),
        box_subdomain="crossfitbox",
        box_aimharder_id="10122",
        execute_at_ms=execute_at_ms,
        received_at_ns=1_767_938_395_000_000_000,
    )


async def _bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def _run_until(awaitable: Awaitable[T], timeout_s: float) -> asyncio.Task[T] | None:
    """Return the task once it finishes, or None after cancelling it at `timeout_s`.

    Unlike asyncio.wait_for, a TimeoutError that the task raises itself stays
    distinguishable from the timeout of the wait.
    """
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        return task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


@pytest.fixture
async def broker(nats_settings: Settings) -> AsyncIterator[NatsBroker]:
    """Broker from create_broker, connected to the test NATS server."""
    nats_broker = create_broker(nats_settings)
    await _bounded(nats_broker.connect())
    yield nats_broker
    await _bounded(nats_broker.stop())


@pytest.fixture
def unreachable_settings(clean_env: pytest.MonkeyPatch) -> Settings:
    """Settings whose NATS URL is a loopback port that nothing listens on."""
    return Settings(nats_url=f"nats://127.0.0.1:{free_port()}", nats_publish_timeout_s=0.5)


async def _stream_info(broker: NatsBroker, settings: Settings):
    return await _bounded(broker.connection.jetstream().stream_info(settings.nats_stream))


# --- ensure_stream --------------------------------------------------------------------------


async def test_ensure_stream_uses_file_storage(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))

    info = await _stream_info(broker, nats_settings)
    assert info.config.storage == StorageType.FILE


async def test_ensure_stream_sets_duplicate_window(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))

    info = await _stream_info(broker, nats_settings)
    assert info.config.duplicate_window == nats_settings.nats_duplicate_window_s


async def test_ensure_stream_sets_subjects(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))

    info = await _stream_info(broker, nats_settings)
    assert info.config.subjects == [f"{nats_settings.nats_subject_prefix}.>"]


async def test_ensure_stream_twice_keeps_messages(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))
    await _bounded(publish_event(broker, nats_settings, _prepare_event()))

    await _bounded(ensure_stream(broker, nats_settings))

    info = await _stream_info(broker, nats_settings)
    assert info.state.messages == 1


async def test_ensure_stream_updates_window(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))
    wider = nats_settings.model_copy(update={"nats_duplicate_window_s": 300.0})

    await _bounded(ensure_stream(broker, wider))

    info = await _stream_info(broker, nats_settings)
    assert info.config.duplicate_window == 300.0


# --- publish_event --------------------------------------------------------------------------


async def test_publish_duplicate_is_dropped(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))
    event = _prepare_event()

    first = await _bounded(publish_event(broker, nats_settings, event, message_id=event.message_id))
    second = await _bounded(publish_event(broker, nats_settings, event, message_id=event.message_id))

    info = await _stream_info(broker, nats_settings)
    assert first is False
    assert second is True
    assert info.state.messages == 1


async def test_publish_distinct_ids_kept(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))
    first_event = _prepare_event()
    second_event = _prepare_event()

    first = await _bounded(publish_event(broker, nats_settings, first_event, message_id=first_event.message_id))
    second = await _bounded(publish_event(broker, nats_settings, second_event, message_id=second_event.message_id))

    info = await _stream_info(broker, nats_settings)
    assert first is False
    assert second is False
    assert info.state.messages == 2


async def test_publish_without_id_not_deduplicated(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))
    event = _prepare_event()

    await _bounded(publish_event(broker, nats_settings, event))
    second = await _bounded(publish_event(broker, nats_settings, event))

    info = await _stream_info(broker, nats_settings)
    assert second is False
    assert info.state.messages == 2


async def test_published_message_content(broker: NatsBroker, nats_settings: Settings) -> None:
    await _bounded(ensure_stream(broker, nats_settings))
    event = _prepare_event()

    await _bounded(
        publish_event(broker, nats_settings, event, message_id=event.message_id, headers={"traceparent": "00-x"})
    )

    stored = await _bounded(broker.connection.jetstream().get_msg(nats_settings.nats_stream, seq=1))
    assert stored.subject == nats_settings.subject("prepare")
    assert stored.data == event.to_bytes()
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == event.message_id
    assert stored.headers["traceparent"] == "00-x"


async def test_publish_without_stream_fails(broker: NatsBroker, nats_settings: Settings) -> None:
    # No ensure_stream, so no stream takes the subject and JetStream has no responder.
    with pytest.raises(PublishError) as caught:
        await _bounded(publish_event(broker, nats_settings, _prepare_event()))

    assert nats_settings.subject("prepare") in str(caught.value)
    assert "PREBOOK_NATS_URL" in str(caught.value)


async def test_publish_while_server_down(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server = NatsServerProcess(tmp_path / "jetstream-store", name="stopped-nats", log_path=tmp_path / "nats.log")
    await asyncio.to_thread(server.start)
    names = new_nats_names()
    settings = Settings(
        nats_url=server.url,
        nats_stream=names.stream,
        nats_subject_prefix=names.subject_prefix,
        nats_publish_timeout_s=1.0,
    )
    nats_broker = create_broker(settings)
    try:
        await _bounded(nats_broker.connect())
        await _bounded(ensure_stream(nats_broker, settings))

        await asyncio.to_thread(server.stop)
        with pytest.raises(PublishError):
            await _bounded(publish_event(nats_broker, settings, _prepare_event()))

        # Recovery: the broker reconnects on its own once the server is back.
        await asyncio.to_thread(server.start)
        await eventually(
            lambda: broker_connected(nats_broker), timeout_s=WAIT_S, message="broker did not reconnect"
        )
        duplicate = await _bounded(publish_event(nats_broker, settings, _prepare_event()))
        assert duplicate is False
    finally:
        if server.running:
            await _bounded(nats_broker.stop())
        await asyncio.to_thread(server.stop)


# --- connection state -----------------------------------------------------------------------


async def test_broker_connected_after_connect(broker: NatsBroker) -> None:
    assert broker_connected(broker)


async def test_broker_not_connected_before_connect(nats_settings: Settings) -> None:
    assert not broker_connected(create_broker(nats_settings))


async def test_connect_with_retry_connects(nats_settings: Settings) -> None:
    nats_broker = create_broker(nats_settings)
    try:
        await _bounded(connect_with_retry(nats_broker, nats_settings))
        assert broker_connected(nats_broker)
    finally:
        await _bounded(nats_broker.stop())


async def test_connect_with_retry_logs_warning(
    unreachable_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="prebook_common.streams")
    nats_broker = create_broker(unreachable_settings)

    def warnings_logged() -> list[logging.LogRecord]:
        return [
            record
            for record in caplog.records
            if record.name == "prebook_common.streams" and record.levelno == logging.WARNING
        ]

    task = asyncio.ensure_future(connect_with_retry(nats_broker, unreachable_settings))
    try:
        records = await eventually(
            warnings_logged, timeout_s=UNREACHABLE_WAIT_S, message="no WARNING about the unreachable NATS"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _bounded(nats_broker.stop())

    assert unreachable_settings.nats_url in records[0].getMessage()


async def test_publish_unconnected_raises_publish_error(unreachable_settings: Settings) -> None:
    nats_broker = create_broker(unreachable_settings)
    try:
        await _run_until(nats_broker.connect(), 1.0)

        with pytest.raises(PublishError):
            await _bounded(publish_event(nats_broker, unreachable_settings, _prepare_event()))
    finally:
        await _bounded(nats_broker.stop())

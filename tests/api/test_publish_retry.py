"""A prebooking created while NATS is down: the row stays and the event follows later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.conftest import ADMIN_KEY, EventReader, bearer, gateway_settings, running_gateway
from support.jetstream import new_nats_names
from support.polling import eventually
from support.servers import NatsServerProcess

WAIT_S = 30.0


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServerProcess]:
    """A nats-server that this test alone stops and restarts."""
    with NatsServerProcess(tmp_path / "jetstream", log_path=tmp_path / "nats.log") as server:
        yield server


async def test_created_event_survives_nats_outage(
    own_nats: NatsServerProcess, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prebook_gateway")
    names = new_nats_names()
    settings = gateway_settings(own_nats.url, database_url, names, "http://127.0.0.1:9", nats_publish_timeout_s=0.5)
    reader = EventReader(own_nats.url, names)

    async with running_gateway(settings, names) as gateway:
        await gateway.put_box("crossfitsol")
        key = await gateway.create_user_key("ana@example.com")
        await asyncio.to_thread(own_nats.stop)
        await eventually(
            lambda: not gateway.state.broker_connected(), timeout_s=WAIT_S, message="the gateway never saw NATS go"
        )

        body = {"box": "crossfitsol", "class_id": "9", "class_day": "2030-05-20", "class_time": "09:00"}
        response = await gateway.client.post("/v1/prebookings", json=body, headers=bearer(key))

        assert response.status_code == 201, response.text
        prebooking_id = response.json()["id"]
        shown = await gateway.client.get(f"/v1/prebookings/{prebooking_id}", headers=bearer(key))
        assert shown.json()["status"] == "pending"
        assert gateway.state.publisher.pending_retries == 1
        warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
        assert any(f"{prebooking_id}:created" in record.getMessage() for record in warnings)

        await asyncio.to_thread(own_nats.start)
        try:
            event = await reader.next(timeout_s=WAIT_S)
        finally:
            await reader.close()

        assert event.data["prebooking_id"] == prebooking_id
        assert event.message_id == f"{prebooking_id}:created"
        await eventually(
            lambda: gateway.state.publisher.pending_retries == 0,
            timeout_s=WAIT_S,
            message="the retry task never finished",
        )
        assert any(
            "published on attempt" in record.getMessage() and prebooking_id in record.getMessage()
            for record in caplog.records
        )
        assert (await gateway.client.get("/v1/me", headers=bearer(ADMIN_KEY))).status_code == 200

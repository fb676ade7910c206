"""The local delivery against a real gateway process: the callback becomes a prepare event."""

from __future__ import annotations

import asyncio

import nats
from nats.js.errors import NotFoundError

from prebook_common.events import PrebookingCreated, PrebookingPrepare
from prebook_common.models import PrebookingStatus, ScheduleStatus, datetime_to_ms
from scheduler_support import WAIT_S, EventPublisher, PrebookingRows, RunningSchedulers, make_settings, now_ms
from support.jetstream import NatsNames
from support.polling import eventually
from support.ports import free_port
from support.processes import ServiceProcesses
from support.stack import CURRENT_KEY, NEXT_KEY, PREBOOK, TOKEN_SECRET


async def test_delivery_reaches_gateway(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    service_env: dict[str, str],
    service_processes: ServiceProcesses,
    rows: PrebookingRows,
    publisher: EventPublisher,
    schedulers: RunningSchedulers,
) -> None:
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway = service_processes.start(
        "gateway",
        [*PREBOOK, "gateway"],
        env={
            **service_env,
            "PREBOOK_TOKEN_SECRET": TOKEN_SECRET,
            "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
            "PREBOOK_QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
            "PREBOOK_GATEWAY_PORT": str(gateway_port),
            "PREBOOK_PUBLIC_URL": gateway_url,
        },
    )
    await asyncio.to_thread(gateway.wait_for_http, f"{gateway_url}/readyz", 30)
    await schedulers.start(make_settings(nats_url, database_url, nats_names, public_url=gateway_url))
    execute_at_ms = now_ms() + 2500
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)
    schedule = await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    prepare = await _last_prepare_event(nats_url, nats_names)
    assert prepare.prebooking_id == prebooking_id
    assert prepare.execute_at_ms == execute_at_ms
    assert prepare.qstash_message_id == schedule.message_id
    assert prepare.retried == 0
    assert prepare.received_at_ns >= datetime_to_ms(schedule.wake_at) * 1_000_000


async def _last_prepare_event(nats_url: str, nats_names: NatsNames) -> PrebookingPrepare:
    client = await nats.connect(nats_url)
    try:
        jetstream = client.jetstream()

        async def last_message():
            try:
                return await jetstream.get_last_msg(nats_names.stream, nats_names.subject("prepare"))
            except NotFoundError:
                return None

        message = await eventually(last_message, timeout_s=WAIT_S, message="no prepare event reached JetStream")
        return PrebookingPrepare.model_validate_json(message.data)
    finally:
        await client.close()

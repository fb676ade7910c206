"""How the local delivery handles the callback's responses: 489 fails, 503 is retried."""

from __future__ import annotations

import logging

import pytest

from callback_receiver import ScriptedResponse, CallbackReceiver
from prebook_common.events import PrebookingCreated
from prebook_common.models import PrebookingStatus, ScheduleStatus
from scheduler_support import EventPublisher, PrebookingRows, RunningSchedulers, make_settings, now_ms
from support.jetstream import NatsNames

# The first retry comes 1 s after the first attempt and must still precede the opening.
RETRY_LEAD_S = 3.0


async def test_non_retryable_489_fails(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    receiver.responses.append(ScriptedResponse(489, {"Upstash-NonRetryable-Error": "true"}))
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    execute_at_ms = now_ms() + 2500
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    prebooking = await rows.wait_for_status(prebooking_id, PrebookingStatus.FAILED)
    assert prebooking.error_code == "CALLBACK_REJECTED"
    assert "489" in prebooking.error_message
    schedule = await rows.schedule(prebooking_id)
    assert schedule.status == ScheduleStatus.FAILED
    assert schedule.attempts == 1
    assert "489" in schedule.last_error
    assert [delivery.status for delivery in receiver.deliveries] == [489]


async def test_unavailable_503_is_retried(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="prebook_scheduler")
    receiver.responses.append(ScriptedResponse(503, {"Retry-After": "2"}))
    settings = make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url, lead_s=RETRY_LEAD_S)
    await schedulers.start(settings)
    execute_at_ms = now_ms() + round(RETRY_LEAD_S * 1000) + 500
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    schedule = await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    assert schedule.attempts == 2
    assert [delivery.status for delivery in receiver.deliveries] == [503, 202]
    assert [delivery.retried for delivery in receiver.deliveries] == ["0", "1"]
    assert {delivery.message_id for delivery in receiver.deliveries} == {schedule.message_id}
    assert (await rows.prebooking(prebooking_id)).status == PrebookingStatus.SCHEDULED

    retries = [
        record for record in caplog.records if record.levelno == logging.WARNING and "retrying in" in record.getMessage()
    ]
    assert len(retries) == 1
    assert str(prebooking_id) in retries[0].getMessage()
    assert "attempt 1 of 4" in retries[0].getMessage()
    assert "503" in retries[0].getMessage()


async def test_retries_used_up_fail(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    receiver.responses.extend([ScriptedResponse(500), ScriptedResponse(500)])
    settings = make_settings(
        nats_url, database_url, nats_names, local_delivery_url=receiver.url, lead_s=RETRY_LEAD_S, qstash_retries=1
    )
    await schedulers.start(settings)
    execute_at_ms = now_ms() + round(RETRY_LEAD_S * 1000) + 500
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    prebooking = await rows.wait_for_status(prebooking_id, PrebookingStatus.FAILED)
    assert prebooking.error_code == "DELIVERY_FAILED"
    assert "2 attempts" in prebooking.error_message
    schedule = await rows.schedule(prebooking_id)
    assert schedule.status == ScheduleStatus.FAILED
    assert schedule.attempts == 2
    assert [delivery.status for delivery in receiver.deliveries] == [500, 500]

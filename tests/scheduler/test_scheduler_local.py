"""The local backend: events become schedule rows, and due rows become signed callbacks."""

from __future__ import annotations

from datetime import timedelta

from callback_receiver import CallbackReceiver
from scheduler_support import (
    LEAD_S,
    POLL_INTERVAL_S,
    WAIT_S,
    EventPublisher,
    PrebookingRows,
    RunningSchedulers,
    make_settings,
    now_ms,
)
from prebook_common.events import PrebookingCancelled, PrebookingCreated, PrebookingRescheduled
from prebook_common.models import PrebookingStatus, ScheduleStatus, datetime_to_ms, ms_to_datetime
from prebook_common.token import verify_token
from support.jetstream import NatsNames
from support.polling import eventually
from support.stack import BOX, BOX_ID, TOKEN_SECRET


async def _deliveries(receiver: CallbackReceiver, count: int):
    return await eventually(
        lambda: receiver.deliveries if len(receiver.deliveries) >= count else None,
        timeout_s=WAIT_S,
        message=f"the receiver never got {count} deliveries",
    )


async def _past(epoch_ms: int) -> None:
    await eventually(lambda: now_ms() > epoch_ms, timeout_s=WAIT_S, message=f"the clock never passed {epoch_ms} ms")


async def test_created_is_delivered_at_wake_up(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    execute_at_ms = now_ms() + 2500
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    prebooking = await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)
    schedule = await rows.schedule(prebooking_id)
    assert schedule is not None
    assert schedule.backend == "local"
    assert schedule.execute_at == ms_to_datetime(execute_at_ms)
    assert schedule.wake_at == ms_to_datetime(execute_at_ms) - timedelta(seconds=LEAD_S)
    assert schedule.message_id == f"local_{schedule.id}"
    assert prebooking.schedule_id == schedule.message_id

    [delivery] = await _deliveries(receiver, 1)
    assert delivery.received_ns >= datetime_to_ms(schedule.wake_at) * 1_000_000
    assert delivery.message_id == schedule.message_id
    assert delivery.retried == "0"
    assert delivery.content_type == "application/json"
    assert delivery.body["prebookingId"] == str(prebooking_id)
    assert delivery.body["executeAt"] == execute_at_ms
    assert delivery.body["boxSubdomain"] == BOX
    assert delivery.body["boxAimharderId"] == BOX_ID
    verify_token(TOKEN_SECRET, prebooking_id, execute_at_ms, delivery.body["securityToken"])
    assert receiver.rejected == []

    delivered = await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    assert delivered.attempts == 1
    assert delivered.delivered_at is not None
    assert delivered.locked_by is None


async def test_duplicate_created_is_noop(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    execute_at_ms = now_ms() + 3000
    prebooking_id = await rows.add(execute_at_ms)
    event = PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms)

    await publisher.publish(event)
    await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)
    first = await rows.schedule(prebooking_id)
    second_seq = await publisher.publish(event)
    await publisher.wait_until_acked("created", second_seq)

    again = await rows.schedule(prebooking_id)
    assert again is not None
    assert first is not None
    assert again.id == first.id
    assert again.message_id == first.message_id

    await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    assert len(receiver.deliveries) == 1


async def test_cancel_stops_delivery(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    execute_at_ms = now_ms() + 3000
    prebooking_id = await rows.add(execute_at_ms)
    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))
    await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)

    await rows.update(prebooking_id, status=PrebookingStatus.CANCELLED)
    await publisher.publish(PrebookingCancelled(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    cancelled = await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.CANCELLED)
    assert cancelled.attempts == 0
    # Past the wake-up and the opening, with a few polls to spare, nothing was sent.
    await _past(execute_at_ms + round(3 * POLL_INTERVAL_S * 1000))
    assert receiver.deliveries == []
    assert (await rows.schedule(prebooking_id)).status == ScheduleStatus.CANCELLED
    assert (await rows.prebooking(prebooking_id)).status == PrebookingStatus.CANCELLED


async def test_cancelled_prebooking_is_skipped(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    execute_at_ms = now_ms() + 60_000
    prebooking_id = await rows.add(execute_at_ms, status=PrebookingStatus.CANCELLED)

    seq = await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))
    await publisher.wait_until_acked("created", seq)

    assert await rows.schedule(prebooking_id) is None
    assert (await rows.prebooking(prebooking_id)).status == PrebookingStatus.CANCELLED


async def test_reschedule_moves_wake_up(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    first_ms = now_ms() + 60_000
    prebooking_id = await rows.add(first_ms)
    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=first_ms))
    await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)
    first = await rows.schedule(prebooking_id)

    second_ms = now_ms() + 2500
    await rows.update(prebooking_id, execute_at=ms_to_datetime(second_ms))
    await publisher.publish(
        PrebookingRescheduled(prebooking_id=prebooking_id, execute_at_ms=second_ms, previous_execute_at_ms=first_ms)
    )

    moved = await rows.wait_for_schedule(prebooking_id, lambda row: row.execute_at == ms_to_datetime(second_ms))
    assert moved.wake_at == ms_to_datetime(second_ms) - timedelta(seconds=LEAD_S)
    assert moved.status == ScheduleStatus.PENDING
    assert moved.message_id != first.message_id
    prebooking = await rows.prebooking(prebooking_id)
    assert prebooking.status == PrebookingStatus.SCHEDULED
    assert prebooking.schedule_id == moved.message_id

    [delivery] = await _deliveries(receiver, 1)
    assert delivery.body["executeAt"] == second_ms
    assert delivery.message_id == moved.message_id
    assert delivery.received_ns >= datetime_to_ms(moved.wake_at) * 1_000_000
    verify_token(TOKEN_SECRET, prebooking_id, second_ms, delivery.body["securityToken"])
    await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    assert len(receiver.deliveries) == 1


async def test_opening_passed_is_missed(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url))
    execute_at_ms = now_ms() - 5000
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    prebooking = await rows.wait_for_status(prebooking_id, PrebookingStatus.MISSED)
    assert prebooking.error_code == "MISSED"
    assert ms_to_datetime(execute_at_ms).isoformat() in prebooking.error_message
    assert await rows.schedule(prebooking_id) is None
    assert receiver.deliveries == []

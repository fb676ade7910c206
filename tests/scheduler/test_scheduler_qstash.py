"""The qstash backend: the official SDK publishes, and deletes on cancel, against a QStash stand-in."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from fake_qstash import FakeQStash
from prebook_common.events import PrebookingCancelled, PrebookingCreated, PrebookingRescheduled
from prebook_common.models import PrebookingStatus, ScheduleStatus, ms_to_datetime
from prebook_common.token import verify_token
from scheduler_support import (
    LEAD_S,
    SIGNED_URL,
    WAIT_S,
    EventPublisher,
    PrebookingRows,
    RunningSchedulers,
    make_settings,
    now_ms,
)
from support.jetstream import NatsNames
from support.polling import eventually
from support.stack import BOX, BOX_ID, TOKEN_SECRET

QSTASH_TOKEN = "qstash-test-token"
RETRIES = 2


def _qstash_settings(nats_url: str, database_url: str, nats_names: NatsNames, fake_qstash: FakeQStash):
    return make_settings(
        nats_url,
        database_url,
        nats_names,
        scheduler_backend="auto",
        qstash_token=QSTASH_TOKEN,
        qstash_url=fake_qstash.url,
        qstash_retries=RETRIES,
    )


async def _published(fake_qstash: FakeQStash, count: int):
    return await eventually(
        lambda: fake_qstash.published if len(fake_qstash.published) >= count else None,
        timeout_s=WAIT_S,
        message=f"QStash never got {count} publishes",
    )


async def test_created_publishes_to_qstash(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    fake_qstash: FakeQStash,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(_qstash_settings(nats_url, database_url, nats_names, fake_qstash))
    # An instant in the middle of a second, so rounding up would be visible.
    execute_at_ms = (now_ms() // 1000 + 60) * 1000 + 700
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    prebooking = await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)
    [message] = await _published(fake_qstash, 1)
    wake_ms = execute_at_ms - round(LEAD_S * 1000)
    assert message.destination == SIGNED_URL
    assert message.headers["authorization"] == f"Bearer {QSTASH_TOKEN}"
    assert message.headers["upstash-not-before"] == str(wake_ms // 1000)
    assert message.headers["upstash-deduplication-id"] == f"{prebooking_id}-{execute_at_ms}"
    assert message.headers["upstash-retries"] == str(RETRIES)
    assert message.headers["content-type"] == "application/json"
    body = json.loads(message.body)
    assert body["prebookingId"] == str(prebooking_id)
    assert body["executeAt"] == execute_at_ms
    assert body["boxSubdomain"] == BOX
    assert body["boxAimharderId"] == BOX_ID
    verify_token(TOKEN_SECRET, prebooking_id, execute_at_ms, body["securityToken"])

    schedule = await rows.schedule(prebooking_id)
    assert schedule is not None
    assert schedule.backend == "qstash"
    assert schedule.message_id == message.message_id
    assert schedule.wake_at == ms_to_datetime(execute_at_ms) - timedelta(seconds=LEAD_S)
    assert prebooking.schedule_id == message.message_id


async def test_cancel_deletes_qstash_message(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    fake_qstash: FakeQStash,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(_qstash_settings(nats_url, database_url, nats_names, fake_qstash))
    execute_at_ms = now_ms() + 60_000
    prebooking_id = await rows.add(execute_at_ms)
    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))
    [message] = await _published(fake_qstash, 1)
    await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)

    await rows.update(prebooking_id, status=PrebookingStatus.CANCELLED)
    await publisher.publish(PrebookingCancelled(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    cancelled = await rows.wait_for_schedule(prebooking_id, lambda row: row.status == ScheduleStatus.CANCELLED)
    assert fake_qstash.deleted == [message.message_id]
    assert message.message_id not in fake_qstash.live
    assert cancelled.message_id == message.message_id


async def test_reschedule_replaces_qstash_message(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    fake_qstash: FakeQStash,
    schedulers: RunningSchedulers,
) -> None:
    await schedulers.start(_qstash_settings(nats_url, database_url, nats_names, fake_qstash))
    first_ms = now_ms() + 60_000
    prebooking_id = await rows.add(first_ms)
    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=first_ms))
    [first] = await _published(fake_qstash, 1)
    await rows.wait_for_schedule(prebooking_id, lambda row: row.message_id == first.message_id)

    second_ms = first_ms + 3_600_000
    await rows.update(prebooking_id, execute_at=ms_to_datetime(second_ms))
    await publisher.publish(
        PrebookingRescheduled(prebooking_id=prebooking_id, execute_at_ms=second_ms, previous_execute_at_ms=first_ms)
    )

    _, second = await _published(fake_qstash, 2)
    schedule = await rows.wait_for_schedule(prebooking_id, lambda row: row.message_id == second.message_id)
    assert fake_qstash.deleted == [first.message_id]
    assert second.headers["upstash-not-before"] == str((second_ms - round(LEAD_S * 1000)) // 1000)
    assert second.headers["upstash-deduplication-id"] == f"{prebooking_id}-{second_ms}"
    assert json.loads(second.body)["executeAt"] == second_ms
    assert schedule.execute_at == ms_to_datetime(second_ms)
    assert schedule.status == ScheduleStatus.PENDING
    prebooking = await rows.prebooking(prebooking_id)
    assert prebooking.status == PrebookingStatus.SCHEDULED
    assert prebooking.schedule_id == second.message_id


async def test_failed_publish_is_redelivered(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    fake_qstash: FakeQStash,
    schedulers: RunningSchedulers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="prebook_scheduler")
    fake_qstash.failing_publishes = 1
    await schedulers.start(_qstash_settings(nats_url, database_url, nats_names, fake_qstash))
    execute_at_ms = now_ms() + 60_000
    prebooking_id = await rows.add(execute_at_ms)

    await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    prebooking = await rows.wait_for_status(prebooking_id, PrebookingStatus.SCHEDULED)
    [message] = fake_qstash.published
    assert fake_qstash.failed_publishes == 1
    assert prebooking.schedule_id == message.message_id
    redeliveries = [record.getMessage() for record in caplog.records if "redelivering in" in record.getMessage()]
    assert len(redeliveries) == 1
    assert str(prebooking_id) in redeliveries[0]
    assert "BackendUnavailable" in redeliveries[0]

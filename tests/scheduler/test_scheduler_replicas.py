"""Two scheduler replicas on one database deliver each due row exactly once."""

from __future__ import annotations

from collections import Counter

from sqlmodel import select

from callback_receiver import CallbackReceiver
from prebook_common.db import session_factory
from prebook_common.events import PrebookingCreated
from prebook_common.models import Schedule, ScheduleStatus
from scheduler_support import WAIT_S, EventPublisher, PrebookingRows, RunningSchedulers, make_settings, now_ms
from support.jetstream import NatsNames
from support.polling import eventually

ROWS = 20


async def test_replicas_deliver_each_row_once(
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
    schedulers: RunningSchedulers,
) -> None:
    settings = make_settings(nats_url, database_url, nats_names, local_delivery_url=receiver.url)
    # Each replica has its own engine, as separate processes would.
    await schedulers.start(settings, owner="replica-a")
    await schedulers.start(settings, owner="replica-b")
    execute_at_ms = now_ms() + 3000
    prebooking_ids = [await rows.add(execute_at_ms, user=f"user{index}@example.com") for index in range(ROWS)]

    for prebooking_id in prebooking_ids:
        await publisher.publish(PrebookingCreated(prebooking_id=prebooking_id, execute_at_ms=execute_at_ms))

    async def all_delivered() -> list[Schedule] | None:
        async with session_factory(rows.engine)() as session:
            schedules = (await session.exec(select(Schedule))).all()
        delivered = [row for row in schedules if row.status == ScheduleStatus.DELIVERED]
        return schedules if len(delivered) == ROWS else None

    schedules = await eventually(all_delivered, timeout_s=WAIT_S, message=f"not all {ROWS} schedules were delivered")
    # A delivered row is never claimed again, so no delivery can follow this point.
    sent = Counter(delivery.message_id for delivery in receiver.deliveries)
    assert set(sent) == {row.message_id for row in schedules}
    assert len(sent) == ROWS
    assert [message_id for message_id, count in sent.items() if count > 1] == []
    assert all(row.attempts == 1 for row in schedules)
    assert {row.prebooking_id for row in schedules} == set(prebooking_ids)
    assert receiver.rejected == []

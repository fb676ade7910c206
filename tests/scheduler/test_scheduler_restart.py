"""A restarted ``prebook scheduler`` process delivers what came due while none ran."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from callback_receiver import CallbackReceiver
from prebook_common.events import PrebookingCreated
from prebook_common.models import PrebookingStatus, Schedule, ScheduleStatus, ms_to_datetime
from scheduler_support import (
    POLL_INTERVAL_S,
    PUBLIC_URL,
    WAIT_S,
    EventPublisher,
    PrebookingRows,
    now_ms,
)
from support.polling import eventually
from support.processes import ServiceProcesses
from support.stack import CURRENT_KEY, NEXT_KEY, PREBOOK, TOKEN_SECRET

# Long enough for the second process to start between a wake-up and its opening.
RESTART_LEAD_S = 6.0
START_TIMEOUT_S = 30.0


async def test_restart_delivers_due_rows(
    service_env: dict[str, str],
    service_processes: ServiceProcesses,
    rows: PrebookingRows,
    publisher: EventPublisher,
    receiver: CallbackReceiver,
) -> None:
    env = {
        **service_env,
        "PREBOOK_TOKEN_SECRET": TOKEN_SECRET,
        "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
        "PREBOOK_QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
        "PREBOOK_PUBLIC_URL": PUBLIC_URL,
        "PREBOOK_LOCAL_DELIVERY_URL": receiver.url,
        "PREBOOK_SCHEDULER_BACKEND": "local",
        "PREBOOK_LEAD_S": str(RESTART_LEAD_S),
        "PREBOOK_SCHEDULER_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
    }
    lead_ms = round(RESTART_LEAD_S * 1000)

    # 1. The first process schedules a prebooking whose wake-up is 2 s away, and stops.
    first = service_processes.start("scheduler", [*PREBOOK, "scheduler"], env=env)
    await asyncio.to_thread(first.wait_for_log, "scheduler started", START_TIMEOUT_S)
    armed_ms = now_ms() + lead_ms + 2000
    armed_id = await rows.add(armed_ms, user="armed@example.com")
    await publisher.publish(PrebookingCreated(prebooking_id=armed_id, execute_at_ms=armed_ms))
    await rows.wait_for_status(armed_id, PrebookingStatus.SCHEDULED)
    assert await asyncio.to_thread(first.stop) == 0
    assert "scheduler stopped" in first.logs_since_start()

    # 2. While no scheduler runs: a created event waits in JetStream, and a row left by
    # an earlier run passes its opening.
    waiting_ms = now_ms() + lead_ms + 3000
    waiting_id = await rows.add(waiting_ms, user="waiting@example.com")
    await publisher.publish(PrebookingCreated(prebooking_id=waiting_id, execute_at_ms=waiting_ms))
    passed_ms = now_ms() - 1000
    passed_id = await rows.add(passed_ms, status=PrebookingStatus.SCHEDULED, user="passed@example.com")
    schedule_id = uuid.uuid4()
    await rows.add_schedule(
        Schedule(
            id=schedule_id,
            prebooking_id=passed_id,
            backend="local",
            execute_at=ms_to_datetime(passed_ms),
            wake_at=ms_to_datetime(passed_ms) - timedelta(seconds=RESTART_LEAD_S),
            message_id=f"local_{schedule_id}",
        )
    )
    await eventually(lambda: now_ms() > armed_ms - lead_ms, timeout_s=WAIT_S, message="the wake-up never passed")
    assert receiver.deliveries == []

    # 3. The second process delivers the due row at once, schedules the waiting event
    # and marks the passed opening missed.
    second = service_processes.start("scheduler", [*PREBOOK, "scheduler"], env=env)
    await asyncio.to_thread(second.wait_for_log, "scheduler started", START_TIMEOUT_S)

    armed = await rows.wait_for_schedule(armed_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    assert armed.attempts == 1
    waiting = await rows.wait_for_schedule(waiting_id, lambda row: row.status == ScheduleStatus.DELIVERED)
    assert waiting.wake_at == ms_to_datetime(waiting_ms) - timedelta(seconds=RESTART_LEAD_S)
    passed = await rows.wait_for_status(passed_id, PrebookingStatus.MISSED)
    assert passed.error_code == "MISSED"
    assert ms_to_datetime(passed_ms).isoformat() in passed.error_message
    assert (await rows.schedule(passed_id)).status == ScheduleStatus.FAILED

    sent = {delivery.body["prebookingId"]: delivery for delivery in receiver.deliveries}
    assert set(sent) == {str(armed_id), str(waiting_id)}
    assert len(receiver.deliveries) == 2
    assert sent[str(armed_id)].body["executeAt"] == armed_ms
    assert sent[str(waiting_id)].body["executeAt"] == waiting_ms
    assert "local delivery found 2 due schedule rows at start-up" in second.logs_since_start()

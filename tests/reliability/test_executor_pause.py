"""An executor paused for longer than its lease: the other executor takes the booking over, and only it fires."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from prebook_common.models import PrebookingStatus
from reliability.conftest import DeploymentFactory
from reliability.services import executor_id_of, lateness_ms, sleep_until_ms
from support.polling import eventually
from support.stack import now_ms

pytestmark = pytest.mark.timeout(180)

LEAD_MS = 9000
PAUSE_BEFORE_TARGET_MS = 6000
# Twice PREBOOK_EXECUTOR_LEASE_S (1.5 s by default), so the lease runs out and is taken over.
PAUSE_MS = 3500


@pytest.mark.slow
async def test_paused_holder_drops_taken_booking(start: DeploymentFactory) -> None:
    deployment = await start(executors=2)
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8601, execute_at_ms)
    prebooking_id = await deployment.prebook(8601, execute_at_ms)

    async with deployment.gateway_client() as gateway:
        response = await deployment.send_callback(gateway, prebooking_id, execute_at_ms)
    assert response.status_code == 202, response.text
    holder = await deployment.wait_parked(prebooking_id)
    survivor = next(executor for executor in deployment.executors if executor is not holder)

    await sleep_until_ms(execute_at_ms - PAUSE_BEFORE_TARGET_MS)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        await eventually(
            lambda: f"prebooking {prebooking_id} taken over from executor" in survivor.logs_since_start(),
            timeout_s=PAUSE_MS / 1000,
            message="the other executor did not take the booking over while the holder was paused",
        )
    finally:
        await sleep_until_ms(execute_at_ms - PAUSE_BEFORE_TARGET_MS + PAUSE_MS)
        os.kill(holder.pid, signal.SIGCONT)

    row = await deployment.final_prebooking(prebooking_id)
    await asyncio.sleep(2.0)
    requests = await deployment.book_requests()
    assert row.status == PrebookingStatus.BOOKED
    assert row.claimed_by == executor_id_of(survivor)
    assert len(requests) == 1
    assert requests[0]["arrival_ns"] >= execute_at_ms * 1_000_000
    assert f"prebooking {prebooking_id} dropped: another executor took it over" in holder.logs_since_start()
    assert (await deployment.subject_counts()).get("completed") == 1
    print(
        f"holder paused {PAUSE_MS} ms from {PAUSE_BEFORE_TARGET_MS} ms before the target; the other executor's "
        f"request arrived {lateness_ms(requests[0], execute_at_ms):.1f} ms after the target"
    )

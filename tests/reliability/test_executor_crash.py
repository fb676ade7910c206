"""An executor killed while a booking is parked: another executor fires it, once."""

from __future__ import annotations

import asyncio

import pytest

from prebook_common.models import PrebookingStatus
from reliability.conftest import DeploymentFactory
from reliability.services import executor_id_of, lateness_ms, sleep_until_ms
from support.stack import now_ms

pytestmark = pytest.mark.timeout(180)

LEAD_MS = 6000
KILL_BEFORE_TARGET_MS = 2000


@pytest.mark.slow
async def test_killed_holder_booking_fires_elsewhere(start: DeploymentFactory) -> None:
    deployment = await start(executors=2)
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8201, execute_at_ms)
    prebooking_id = await deployment.prebook(8201, execute_at_ms)

    async with deployment.gateway_client() as gateway:
        response = await deployment.send_callback(gateway, prebooking_id, execute_at_ms)
    assert response.status_code == 202, response.text
    holder = await deployment.wait_parked(prebooking_id)
    survivor = next(executor for executor in deployment.executors if executor is not holder)

    await sleep_until_ms(execute_at_ms - KILL_BEFORE_TARGET_MS)
    killed_at_ms = now_ms()
    await asyncio.to_thread(holder.kill)

    row = await deployment.final_prebooking(prebooking_id)
    requests = await deployment.book_requests()
    assert row.status == PrebookingStatus.BOOKED
    assert row.claimed_by == executor_id_of(survivor)
    assert len(requests) == 1
    assert requests[0]["answer"]["bookState"] == 1
    assert requests[0]["arrival_ns"] >= execute_at_ms * 1_000_000
    assert f"prebooking {prebooking_id} taken over from executor" in survivor.logs_since_start()

    # The outcome is stored and announced once, and nothing is left to redeliver.
    await asyncio.sleep(1.0)
    counts = await deployment.subject_counts()
    assert counts.get("completed") == 1
    assert len(await deployment.book_requests()) == 1
    print(
        f"killed {execute_at_ms - killed_at_ms} ms before the target; the other executor's request arrived "
        f"{lateness_ms(requests[0], execute_at_ms):.1f} ms after the target"
    )

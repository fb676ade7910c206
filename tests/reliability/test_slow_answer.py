"""A booking parked for seconds, then waiting long for AimHarder's response, stays with its executor."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from prebook_common.models import PrebookingStatus
from reliability.conftest import DeploymentFactory
from support.stack import now_ms

# Parked for several lease lengths (PREBOOK_EXECUTOR_LEASE_S is 1.5 s by default) before the target.
LEAD_MS = 8000
# The simulator delays each AimHarder response by more than three lease lengths.
SLOW_RESPONSE_MS = 5000


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_parked_and_slow_booking_not_redelivered(start: DeploymentFactory) -> None:
    deployment = await start(executors=2)
    async with httpx.AsyncClient(base_url=deployment.stack.sim_url, trust_env=False) as sim:
        (await sim.put("/_sim/config", json={"delay_ms": SLOW_RESPONSE_MS})).raise_for_status()
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8801, execute_at_ms)
    prebooking_id = await deployment.prebook(8801, execute_at_ms)

    async with deployment.gateway_client() as gateway:
        response = await deployment.send_callback(gateway, prebooking_id, execute_at_ms)
    assert response.status_code == 202, response.text
    row = await deployment.final_prebooking(prebooking_id)
    await asyncio.sleep(3.0)

    logs = "".join(executor.logs_since_start() for executor in deployment.executors)
    assert row.status == PrebookingStatus.BOOKED
    assert row.response_ms >= SLOW_RESPONSE_MS
    assert len(await deployment.book_requests()) == 1
    assert logs.count(f"prebooking {prebooking_id} parked") == 1
    assert f"prebooking {prebooking_id} left to executor" not in logs
    assert f"prebooking {prebooking_id}: delivery" not in logs
    assert f"prebooking {prebooking_id} taken over" not in logs
    assert f"prebooking {prebooking_id} skipped" not in logs

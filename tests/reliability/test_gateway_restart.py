"""The gateway restarts while callbacks arrive: a client that retries like QStash loses none.

QStash retries any status other than 2xx, and a request that got no response at all. The
client here does the same, but every 200 ms instead of QStash's 12 s and more, so
that the whole test fits before the bookings' instant.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from prebook_common.models import PrebookingStatus
from reliability.conftest import DeploymentFactory
from reliability.services import Deployment
from support.stack import now_ms

pytestmark = pytest.mark.timeout(180)

CALLBACKS = 30
SPACING_S = 0.15
RETRY_AFTER_S = 0.2
LEAD_MS = 14_000
REQUEST_TIMEOUT_S = 5.0


async def _deliver(deployment: Deployment, prebooking_id: uuid.UUID, execute_at_ms: int) -> tuple[int, int]:
    """Send one callback until it gets a 2xx; return that status and the number of attempts."""
    body, headers = deployment.stack.callback(prebooking_id, execute_at_ms)
    attempt = 0
    async with deployment.gateway_client(timeout=REQUEST_TIMEOUT_S) as gateway:
        while True:
            attempt += 1
            retried = {**headers, "Upstash-Retried": str(attempt - 1)}
            try:
                response = await gateway.post("/v1/qstash/prepare", content=body, headers=retried)
            except httpx.TransportError:
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            if response.is_success:
                return response.status_code, attempt
            await asyncio.sleep(RETRY_AFTER_S)


async def _deliver_all(deployment: Deployment, prebookings: list[uuid.UUID], execute_at_ms: int) -> list[tuple[int, int]]:
    tasks = []
    for prebooking_id in prebookings:
        tasks.append(asyncio.create_task(_deliver(deployment, prebooking_id, execute_at_ms)))
        await asyncio.sleep(SPACING_S)
    return await asyncio.gather(*tasks)


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_callbacks_survive_gateway_restart(start: DeploymentFactory, kill: bool) -> None:
    deployment = await start()
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8601, execute_at_ms, capacity=CALLBACKS)
    prebookings = [await deployment.prebook(8601, execute_at_ms) for _ in range(CALLBACKS)]

    delivering = asyncio.create_task(_deliver_all(deployment, prebookings, execute_at_ms))
    # A third of the callbacks go out before the restart; the rest meet it or follow it.
    await asyncio.sleep(CALLBACKS * SPACING_S / 3)
    await deployment.restart_gateway(kill=kill)
    results = await delivering

    rows = [await deployment.final_prebooking(prebooking_id) for prebooking_id in prebookings]
    requests = await deployment.book_requests()
    counts = await deployment.subject_counts()
    retried = sum(1 for _, attempts in results if attempts > 1)
    assert all(status == 202 for status, _ in results)
    assert counts.get("prepare") == CALLBACKS
    assert [row.status for row in rows] == [PrebookingStatus.BOOKED] * CALLBACKS
    assert len(requests) == CALLBACKS
    assert len({request["cookies"]["amhrdrauth"] for request in requests}) == CALLBACKS
    print(f"gateway {'killed' if kill else 'stopped'} and restarted: {retried} of {CALLBACKS} callbacks needed retries")

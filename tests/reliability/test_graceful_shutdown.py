"""SIGTERM to an executor with parked bookings: the near one fires here, the far one moves to another executor."""

from __future__ import annotations

import asyncio

import pytest

from prebook_common.models import PrebookingStatus
from reliability.conftest import DeploymentFactory
from reliability.services import executor_id_of, lateness_ms, sleep_until_ms
from support.stack import now_ms

pytestmark = pytest.mark.timeout(180)

NEAR_LEAD_MS = 6000
FAR_LEAD_MS = 10_000
# Under PREBOOK_EXECUTOR_HANDBACK_MARGIN_S (1 s by default), so the near booking stays.
TERM_BEFORE_NEAR_MS = 500


@pytest.mark.slow
async def test_sigterm_hands_back_far_bookings(start: DeploymentFactory) -> None:
    deployment = await start(executors=1)
    first = deployment.executors[0]
    near_at_ms = now_ms() + NEAR_LEAD_MS
    far_at_ms = now_ms() + FAR_LEAD_MS
    await deployment.open_class(8501, near_at_ms)
    await deployment.open_class(8502, far_at_ms)
    near_id = await deployment.prebook(8501, near_at_ms)
    far_id = await deployment.prebook(8502, far_at_ms)

    # Both park on the first executor, because it is the only one yet.
    async with deployment.gateway_client() as gateway:
        for prebooking_id, execute_at_ms in ((near_id, near_at_ms), (far_id, far_at_ms)):
            response = await deployment.send_callback(gateway, prebooking_id, execute_at_ms)
            assert response.status_code == 202, response.text
    assert await deployment.wait_parked(near_id) is first
    assert await deployment.wait_parked(far_id) is first
    second = await deployment.start_executor()

    await sleep_until_ms(near_at_ms - TERM_BEFORE_NEAR_MS)
    exit_status = await asyncio.to_thread(first.stop, 15.0)

    near = await deployment.final_prebooking(near_id)
    far = await deployment.final_prebooking(far_id)
    requests = {request["form"]["id"]: request for request in await deployment.book_requests()}
    first_log = first.logs_since_start()
    assert exit_status == 0
    assert "handed back 1 parked bookings to other executors; firing 1 due within 1.0 s" in first_log
    assert f"prebooking {far_id} handed back for another executor" in first_log
    assert near.status == PrebookingStatus.BOOKED
    assert far.status == PrebookingStatus.BOOKED
    assert near.claimed_by == executor_id_of(first)
    assert far.claimed_by == executor_id_of(second)
    assert sorted(requests) == ["8501", "8502"]
    assert len(await deployment.book_requests()) == 2
    assert requests["8502"]["arrival_ns"] >= far_at_ms * 1_000_000
    counts = await deployment.subject_counts()
    assert counts.get("completed") == 2
    print(
        f"near booking fired by the stopping executor {lateness_ms(requests['8501'], near_at_ms):.1f} ms after its "
        f"target; far booking fired by the other {lateness_ms(requests['8502'], far_at_ms):.1f} ms after its target"
    )

"""In-progress acks keep a parked or slow booking from redelivery, without acking just before the target."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from prebook_common.models import PrebookingStatus
from prebook_executor.keepalive import next_ack_ns
from reliability.conftest import DeploymentFactory
from support.stack import now_ms

MS = 1_000_000
INTERVAL_NS = 667 * MS
QUIET_NS = 500 * MS
TARGET_NS = 100_000 * MS

# Parked for several ack waits (PREBOOK_ACK_WAIT_S is 2 s by default) before the target.
LEAD_MS = 8000
# The simulator delays each AimHarder response by more than two ack waits.
SLOW_RESPONSE_MS = 5000


def _schedule(start_ns: int, end_ns: int) -> list[int]:
    acks = []
    now_ns = start_ns
    while now_ns < end_ns:
        now_ns = next_ack_ns(now_ns, interval_ns=INTERVAL_NS, target_ns=TARGET_NS, quiet_ns=QUIET_NS)
        acks.append(now_ns)
    return acks


@pytest.mark.parametrize("start_ms", [90_000, 95_123, 99_400, 99_600, 100_000, 100_300])
def test_ack_schedule_skips_quiet_window(start_ms: int) -> None:
    acks = _schedule(start_ms * MS, TARGET_NS + 5000 * MS)

    assert not [ack for ack in acks if TARGET_NS - QUIET_NS < ack < TARGET_NS]
    gaps = [later - earlier for earlier, later in zip([start_ms * MS, *acks], acks)]
    assert max(gaps) <= INTERVAL_NS
    assert min(gaps) > 0


def test_ack_schedule_acks_when_window_opens() -> None:
    acks = _schedule(90_000 * MS, TARGET_NS + 1000 * MS)

    assert TARGET_NS - QUIET_NS in acks


def test_ack_inside_long_window_moves_to_target() -> None:
    # An interval shorter than the window would put acks inside it; the next one waits for the target.
    assert next_ack_ns(99_600 * MS, interval_ns=200 * MS, target_ns=TARGET_NS, quiet_ns=QUIET_NS) == TARGET_NS


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
    assert f"prebooking {prebooking_id}: redelivered to the executor that already holds it" not in logs
    assert f"prebooking {prebooking_id} taken over" not in logs
    assert f"prebooking {prebooking_id} skipped" not in logs

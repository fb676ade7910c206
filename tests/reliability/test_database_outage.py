"""The database stops while a booking is parked: it fires anyway, and the outcome is stored when the database returns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from prebook_common.models import PrebookingStatus
from reliability.conftest import DeploymentFactory
from reliability.postgres_instance import PostgresInstance, find_postgres_bin
from reliability.services import lateness_ms, sleep_until_ms
from support.polling import eventually
from support.stack import now_ms

pytestmark = pytest.mark.timeout(180)

LEAD_MS = 6000


@pytest.fixture
def own_postgres() -> Iterator[PostgresInstance]:
    """A Postgres server of this test's own, which it may stop; removed after the services stopped."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip("no Postgres server binaries under /usr/lib/postgresql/*/bin to start a separate server")
    instance = PostgresInstance(bin_dir).init()
    instance.start()
    try:
        yield instance
    finally:
        instance.remove()


@pytest.mark.slow
async def test_booking_fires_while_database_down(own_postgres: PostgresInstance, start: DeploymentFactory) -> None:
    # Two executors: the leases of both run out during the outage, and the other one must
    # not take the booking over when the database returns.
    deployment = await start(database_url=own_postgres.url, executors=2)
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8401, execute_at_ms)
    prebooking_id = await deployment.prebook(8401, execute_at_ms)
    async with deployment.gateway_client() as gateway:
        response = await deployment.send_callback(gateway, prebooking_id, execute_at_ms)
    assert response.status_code == 202, response.text
    executor = await deployment.wait_parked(prebooking_id)

    await sleep_until_ms(execute_at_ms - 3000)
    await asyncio.to_thread(own_postgres.stop)

    # The fire needs no database.
    requests = await eventually(deployment.book_requests, timeout_s=10, message="the booking did not fire while the database was down")
    await eventually(
        lambda: f"storing the outcome of prebooking {prebooking_id} failed" in executor.logs_since_start(),
        timeout_s=10,
        message="the executor never retried storing the outcome",
    )
    await sleep_until_ms(execute_at_ms + 4000)
    await asyncio.to_thread(own_postgres.start)
    restarted_at_ms = now_ms()

    row = await deployment.final_prebooking(prebooking_id)
    stored_after_ms = now_ms() - restarted_at_ms
    assert row.status == PrebookingStatus.BOOKED
    assert row.booking_id == requests[0]["answer"]["id"]
    assert len(requests) == 1
    assert requests[0]["arrival_ns"] >= execute_at_ms * 1_000_000

    async def completed() -> bool:
        return (await deployment.subject_counts()).get("completed") == 1

    await eventually(completed, timeout_s=15, message="prebooking.completed never reached the stream")
    await asyncio.sleep(3.0)
    assert len(await deployment.book_requests()) == 1
    logs = "".join(each.logs_since_start() for each in deployment.executors)
    assert logs.count(f"prebooking {prebooking_id} parked") == 1
    assert f"prebooking {prebooking_id} taken over" not in logs
    retries = executor.logs_since_start().count(f"storing the outcome of prebooking {prebooking_id} failed")
    print(
        f"database down from 3 s before to 4 s after the target; request arrived "
        f"{lateness_ms(requests[0], execute_at_ms):.1f} ms after the target; outcome stored within "
        f"{stored_after_ms} ms of the database's return, after {retries} failed attempts"
    )

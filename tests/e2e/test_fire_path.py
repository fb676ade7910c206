"""The fire path on real processes: a signed callback books the class at its instant."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import httpx
import pytest

from prebook_common.models import FINAL_STATUSES, PrebookingStatus
from support.polling import eventually

from support.stack import Stack, now_ms

LEAD_MS = 3000


async def _final_prebooking(stack: Stack, prebooking_id):
    async def finished():
        row = await stack.get_prebooking(prebooking_id)
        return row if row is not None and row.status in FINAL_STATUSES else None

    return await eventually(finished, timeout_s=30, message=f"prebooking {prebooking_id} never reached a final status")


async def _book_requests(stack: Stack) -> list[dict]:
    async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
        response = await sim.get("/_sim/requests", params={"path": "/api/book"})
        response.raise_for_status()
        return response.json()["requests"]


async def _open_class(stack: Stack, class_id: int, day: date, opens_at_ms: int) -> None:
    async with httpx.AsyncClient(base_url=stack.sim_url) as sim:
        response = await sim.post(
            "/_sim/classes",
            json={"id": class_id, "day": day.strftime("%Y%m%d"), "capacity": 10, "opens_at_ms": opens_at_ms},
        )
        response.raise_for_status()


@pytest.mark.parametrize("deliveries", [1, 3], ids=["once", "three-times"])
async def test_callback_books_at_target(stack: Stack, deliveries: int) -> None:
    day = date.today() + timedelta(days=4)
    execute_at_ms = now_ms() + LEAD_MS
    await _open_class(stack, 7001, day, execute_at_ms)
    prebooking_id = await stack.create_prebooking(user="ana@example.com", class_id="7001", class_day=day, execute_at_ms=execute_at_ms)

    async with httpx.AsyncClient(base_url=stack.gateway_url) as gateway:
        for _ in range(deliveries):
            body, headers = stack.callback(prebooking_id, execute_at_ms)
            response = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)
            assert response.status_code == 202, response.text

    row = await _final_prebooking(stack, prebooking_id)
    requests = await _book_requests(stack)

    assert len(requests) == 1
    request = requests[0]
    assert request["arrival_ns"] >= execute_at_ms * 1_000_000
    assert request["stamp_source"] == "kernel"
    assert request["answer"]["bookState"] == 1
    assert row.status == PrebookingStatus.BOOKED
    assert row.booking_id == request["answer"]["id"]
    assert row.fire_latency_us is not None
    assert row.fire_latency_us >= 0
    assert row.response_ms is not None
    assert row.fired_at is not None
    print(f"arrival - target: {(request['arrival_ns'] - execute_at_ms * 1_000_000) / 1000:.1f} us; executor fire_latency_us {row.fire_latency_us}")


async def test_callback_concurrent_duplicates_book_once(stack: Stack) -> None:
    day = date.today() + timedelta(days=4)
    execute_at_ms = now_ms() + LEAD_MS
    await _open_class(stack, 7002, day, execute_at_ms)
    prebooking_id = await stack.create_prebooking(user="bea@example.com", class_id="7002", class_day=day, execute_at_ms=execute_at_ms)

    async with httpx.AsyncClient(base_url=stack.gateway_url) as gateway:
        calls = [stack.callback(prebooking_id, execute_at_ms) for _ in range(5)]
        responses = await asyncio.gather(*(gateway.post("/v1/qstash/prepare", content=body, headers=headers) for body, headers in calls))
    assert [response.status_code for response in responses] == [202] * 5

    row = await _final_prebooking(stack, prebooking_id)
    requests = await _book_requests(stack)
    assert len(requests) == 1
    assert row.status == PrebookingStatus.BOOKED


async def test_callback_past_target_is_missed(stack: Stack) -> None:
    day = date.today() + timedelta(days=4)
    execute_at_ms = now_ms() - 120_000
    await _open_class(stack, 7003, day, execute_at_ms)
    prebooking_id = await stack.create_prebooking(user="cris@example.com", class_id="7003", class_day=day, execute_at_ms=execute_at_ms)

    async with httpx.AsyncClient(base_url=stack.gateway_url) as gateway:
        body, headers = stack.callback(prebooking_id, execute_at_ms)
        response = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)
    assert response.status_code == 202

    row = await _final_prebooking(stack, prebooking_id)
    assert row.status == PrebookingStatus.MISSED
    assert row.fired_at is None
    assert await _book_requests(stack) == []



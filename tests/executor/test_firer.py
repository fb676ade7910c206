"""Firer: one final byte per booking, the httpx fallback, and "too early" retries on spares.

The bookings go to the AimHarder simulator on loopback, whose classes open at a chosen
instant and whose request log stamps each request's arrival. The fallback test uses the
recording server instead, because it can close a staged connection from the server side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date
from itertools import pairwise

import httpx
import pytest
from recording_server import BOOK_BODY, BOOK_HEADERS, WAIT_S, RecordingServer

from prebook_common.aimharder import BookOutcome, BookRequest, build_book_request
from prebook_common.settings import Settings
from prebook_executor.fire_clock import FireClock
from prebook_executor.firing import Firer
from prebook_executor.staging import serialize_request
from prebook_simulator import SimulatorServer
from support.polling import eventually

CLASS_ID = 5301
CLASS_DAY = date(2030, 5, 6)
USER = "firer@example.com"
COOKIE = "firer-cookie"

# Time from staging to the target, long enough for every test to stage its connections first.
LEAD_MS = 300
GUARD_MS = 2.0


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def control(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=WAIT_S) as client:
        response = await client.post("/_sim/sessions", json={"user": USER, "cookie": COOKIE})
        assert response.status_code == 201, response.text
        yield client


@pytest.fixture
async def clock() -> AsyncIterator[FireClock]:
    fire_clock = FireClock(guard_ns=round(GUARD_MS * 1_000_000))
    yield fire_clock
    await fire_clock.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        yield client


def make_firer(clock: FireClock, http: httpx.AsyncClient, **settings: object) -> Firer:
    values: dict[str, object] = {"guard_ms": GUARD_MS, "connect_timeout_s": WAIT_S, "aimharder_timeout_s": WAIT_S}
    values.update(settings)
    return Firer(Settings(_env_file=None, **values), clock, http)


def book_request(sim_url: str, family_id: str = "") -> BookRequest:
    return build_book_request(
        sim_url,
        class_id=str(CLASS_ID),
        class_day=CLASS_DAY,
        insist=False,
        family_id=family_id,
        cookies={"amhrdrauth": COOKIE},
    )


def next_target_ms() -> int:
    return time.time_ns() // 1_000_000 + LEAD_MS


async def open_class(control: httpx.AsyncClient, *, opens_at_ms: int, capacity: int = 10) -> None:
    gym_class = {"id": CLASS_ID, "day": CLASS_DAY.strftime("%Y%m%d"), "capacity": capacity, "opens_at_ms": opens_at_ms}
    response = await control.post("/_sim/classes", json=gym_class)
    assert response.status_code == 201, response.text


async def book_requests(control: httpx.AsyncClient) -> list[dict]:
    response = await control.get("/_sim/requests", params={"path": "/api/book"})
    assert response.status_code == 200, response.text
    return response.json()["requests"]


async def test_bookings_at_one_instant_send_one_request_each(
    simulator: SimulatorServer, control: httpx.AsyncClient, clock: FireClock, http: httpx.AsyncClient
) -> None:
    count = 5
    firer = make_firer(clock, http, too_early_retries=3)
    target_ms = next_target_ms()
    target_ns = target_ms * 1_000_000
    await open_class(control, opens_at_ms=target_ms, capacity=count)

    # A family id per booking makes each one a different person in the same class.
    requests = [book_request(simulator.url, family_id=str(index)) for index in range(count)]
    staged = [await firer.stage(request, prebooking_id=index) for index, request in enumerate(requests)]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                firer.fire(request, connections, target_ns, prebooking_id=index)
                for index, (request, connections) in enumerate(zip(requests, staged))
            )
        ),
        WAIT_S,
    )

    assert [len(connections) for connections in staged] == [4] * count
    entries = await book_requests(control)
    assert len(entries) == count
    assert sorted(entry["form"]["familyId"] for entry in entries) == [str(index) for index in range(count)]
    assert len({entry["connection"] for entry in entries}) == count
    for entry in entries:
        assert entry["arrival_ns"] >= target_ns
        assert entry["answer"]["bookState"] == 1
    for result in results:
        assert result.answer is not None
        assert result.answer.outcome is BookOutcome.BOOKED
        assert result.attempts == 1
        assert result.fallbacks == 0
        assert result.first_sent_ns is not None
        assert result.first_sent_ns >= target_ns


async def test_closed_staged_connection_falls_back_to_httpx(
    server: RecordingServer, clock: FireClock, http: httpx.AsyncClient
) -> None:
    firer = make_firer(clock, http, too_early_retries=0)
    request = BookRequest(url=server.url(), headers=BOOK_HEADERS, body=BOOK_BODY)
    staged_length = len(serialize_request(request.url, headers=request.headers, body=request.body)) - 1

    staged = await firer.stage(request, prebooking_id="fallback")
    assert len(staged) == 1
    await server.wait_for(lambda: len(server.connections) == 1 and len(server.connections[0].raw) == staged_length)
    await server.connections[0].close()
    await eventually(
        lambda: not staged[0].is_alive(), timeout_s=WAIT_S, message="the client never saw the server close the staged connection"
    )

    target_ns = (time.time_ns() // 1_000_000 + LEAD_MS) * 1_000_000
    result = await asyncio.wait_for(firer.fire(request, staged, target_ns, prebooking_id="fallback"), WAIT_S)

    assert result.fallbacks == 1
    assert result.attempts == 1
    assert result.answer is not None
    assert result.answer.outcome is BookOutcome.BOOKED
    assert result.answer.booking_id == "42"
    assert result.first_sent_ns is not None
    assert result.first_sent_ns >= target_ns
    # The staged connection carried no complete request, and httpx sent the booking on a new one.
    assert len(server.connections) == 2
    assert server.connections[0].requests == []
    assert len(server.requests) == 1
    assert server.requests[0].body == BOOK_BODY
    assert server.requests[0].completed_ns >= target_ns


async def test_too_early_retries_on_spares_until_booked(
    simulator: SimulatorServer, control: httpx.AsyncClient, clock: FireClock, http: httpx.AsyncClient
) -> None:
    retries = 5
    spacing_ms = 80
    firer = make_firer(clock, http, too_early_retries=retries, too_early_spacing_ms=spacing_ms)
    target_ms = next_target_ms()
    # The class opens between the third and the fourth attempt when nothing is slow.
    opens_at_ms = target_ms + 200
    await open_class(control, opens_at_ms=opens_at_ms)
    request = book_request(simulator.url)

    staged = await firer.stage(request, prebooking_id="too-early")
    result = await asyncio.wait_for(firer.fire(request, staged, target_ms * 1_000_000, prebooking_id="too-early"), WAIT_S)

    assert len(staged) == 1 + retries
    assert result.attempts > 1
    assert result.fallbacks == 0
    assert result.answer is not None
    assert result.answer.outcome is BookOutcome.BOOKED
    entries = await book_requests(control)
    # One request per attempt, each on its own staged connection, and none after the booking.
    assert len(entries) == result.attempts
    assert len({entry["connection"] for entry in entries}) == result.attempts
    for entry in entries[:-1]:
        assert entry["answer"]["errorMssgLang"] == "ERROR_ANTELACION_CLIENTE"
        assert entry["arrival_ns"] < opens_at_ms * 1_000_000
    assert entries[-1]["answer"]["bookState"] == 1
    assert entries[-1]["arrival_ns"] >= opens_at_ms * 1_000_000
    assert entries[0]["arrival_ns"] >= target_ms * 1_000_000
    for earlier, later in pairwise(entries):
        assert later["arrival_ns"] - earlier["arrival_ns"] >= spacing_ms * 1_000_000


async def test_zero_retries_makes_one_attempt(
    simulator: SimulatorServer, control: httpx.AsyncClient, clock: FireClock, http: httpx.AsyncClient
) -> None:
    spacing_ms = 20
    firer = make_firer(clock, http, too_early_retries=0, too_early_spacing_ms=spacing_ms)
    target_ms = next_target_ms()
    opens_at_ms = target_ms + 100
    await open_class(control, opens_at_ms=opens_at_ms)
    request = book_request(simulator.url)

    staged = await firer.stage(request, prebooking_id="no-retry")
    result = await asyncio.wait_for(firer.fire(request, staged, target_ms * 1_000_000, prebooking_id="no-retry"), WAIT_S)

    assert len(staged) == 1
    assert result.attempts == 1
    assert result.fallbacks == 0
    assert result.answer is not None
    assert result.answer.outcome is BookOutcome.TOO_EARLY
    # A retry would have fired after the opening, so wait until then and look again.
    wait_s = (opens_at_ms + 2 * spacing_ms) / 1000 - time.time()
    await asyncio.sleep(max(wait_s, 0))
    entries = await book_requests(control)
    assert len(entries) == 1
    assert entries[0]["answer"]["errorMssgLang"] == "ERROR_ANTELACION_CLIENTE"

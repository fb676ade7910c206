"""FireClock: one spin per instant, writes only after the target, removal before the spin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import StageFactory
from recording_server import BOOK_BODY, BOOK_HEADERS, WAIT_S, RecordingServer

from prebook_executor.fallback import send_fresh
from prebook_executor.fire_clock import FireClock, FireOutcome, FireTicket
from prebook_executor.staging import ConnectionLost, StagedRequest, serialize_request

# Far enough ahead that adding the requests finishes before the instant.
LEAD_NS = 50_000_000


class FakeRequest:
    """Fireable that appends its name to a shared list when fired."""

    def __init__(self, name: str, fired: list[str], *, alive: bool = True, error: Exception | None = None) -> None:
        self.name = name
        self.fired = fired
        self.alive = alive
        self.error = error

    def is_alive(self) -> bool:
        return self.alive

    def send_final_byte(self) -> int:
        if self.error is not None:
            raise self.error
        self.fired.append(self.name)
        return time.time_ns()


@pytest.fixture
async def clock() -> AsyncIterator[FireClock]:
    fire_clock = FireClock()
    yield fire_clock
    await fire_clock.aclose()


async def _stage_many(server: RecordingServer, stage: StageFactory, count: int) -> list[StagedRequest]:
    # Staging one at a time keeps server.connections in the same order as the result.
    staged = []
    for index in range(count):
        staged.append(await stage(server.url()))
        await server.wait_for(lambda: len(server.connections) == index + 1)

    staged_length = len(serialize_request(server.url(), headers=BOOK_HEADERS, body=BOOK_BODY)) - 1

    def all_staged() -> bool:
        lengths = [len(connection.raw) for connection in server.connections]
        return lengths == [staged_length] * count

    await server.wait_for(all_staged)
    return staged


async def test_one_instant_fires_every_request(
    server: RecordingServer, stage: StageFactory, clock: FireClock
) -> None:
    staged = await _stage_many(server, stage, 10)
    target_ns = time.time_ns() + LEAD_NS

    tickets = [clock.add(target_ns, request) for request in staged]
    assert clock.pending_targets == [target_ns]
    outcomes = await asyncio.wait_for(asyncio.gather(*tickets), WAIT_S)
    await server.wait_for(lambda: len(server.requests) == 10)

    for outcome in outcomes:
        assert outcome.fired
        assert outcome.sent_ns is not None
        assert outcome.sent_ns >= target_ns
    for request in server.requests:
        assert request.completed_ns >= target_ns
        assert request.body == BOOK_BODY
    assert all(len(connection.requests) == 1 for connection in server.connections)
    assert clock.pending_targets == []


async def test_owners_read_responses_after_firing(
    server: RecordingServer, stage: StageFactory, clock: FireClock
) -> None:
    staged = await _stage_many(server, stage, 3)
    target_ns = time.time_ns() + LEAD_NS

    async def book(request: StagedRequest) -> int:
        outcome = await clock.add(target_ns, request)
        assert outcome.sent_ns is not None
        response = await request.read_response(WAIT_S)
        return response.status_code

    status_codes = await asyncio.wait_for(asyncio.gather(*(book(request) for request in staged)), WAIT_S)

    assert status_codes == [200, 200, 200]


async def test_two_instants_fire_in_order(clock: FireClock) -> None:
    fired: list[str] = []
    first_ns = time.time_ns() + LEAD_NS
    second_ns = first_ns + 1_000_000

    late = clock.add(second_ns, FakeRequest("second", fired))
    early = clock.add(first_ns, FakeRequest("first", fired))
    assert clock.pending_targets == [first_ns, second_ns]

    early_outcome, late_outcome = await asyncio.wait_for(asyncio.gather(early, late), WAIT_S)

    assert fired == ["first", "second"]
    assert early_outcome.sent_ns is not None and early_outcome.sent_ns >= first_ns
    assert late_outcome.sent_ns is not None and late_outcome.sent_ns >= second_ns


async def test_two_instants_reach_server_in_order(
    server: RecordingServer, stage: StageFactory, clock: FireClock
) -> None:
    first, second = await _stage_many(server, stage, 2)
    first_ns = time.time_ns() + LEAD_NS
    second_ns = first_ns + 5_000_000

    tickets = [clock.add(second_ns, second), clock.add(first_ns, first)]
    await asyncio.wait_for(asyncio.gather(*tickets), WAIT_S)
    await server.wait_for(lambda: len(server.requests) == 2)

    first_request = server.connections[0].requests[0]
    second_request = server.connections[1].requests[0]
    assert first_request.completed_ns >= first_ns
    assert second_request.completed_ns >= second_ns
    assert first_request.completed_ns < second_request.completed_ns


async def test_removed_request_is_never_written(
    server: RecordingServer, stage: StageFactory, clock: FireClock
) -> None:
    remaining, removed = await _stage_many(server, stage, 2)
    target_ns = time.time_ns() + LEAD_NS

    remaining_ticket = clock.add(target_ns, remaining)
    removed_ticket = clock.add(target_ns, removed)
    assert removed_ticket.cancel() is True
    await asyncio.wait_for(remaining_ticket, WAIT_S)
    await server.wait_for(lambda: len(server.requests) == 1)

    assert removed.sent_ns is None
    assert removed_ticket.outcome.cancelled()
    assert server.connections[1].requests == []
    assert server.connections[0].requests[0].completed_ns >= target_ns
    assert removed_ticket.cancel() is False


async def test_owner_cancellation_removes_request(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() + LEAD_NS

    cancelled_ticket = clock.add(target_ns, FakeRequest("cancelled", fired))
    remaining_ticket = clock.add(target_ns, FakeRequest("remaining", fired))
    owner = asyncio.create_task(_await_outcome(cancelled_ticket))
    await asyncio.sleep(0)
    owner.cancel()
    await asyncio.wait_for(remaining_ticket, WAIT_S)

    assert fired == ["remaining"]
    assert cancelled_ticket.outcome.cancelled()


async def test_removing_last_request_drops_instant(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() + LEAD_NS
    ticket = clock.add(target_ns, FakeRequest("only", fired))

    assert ticket.cancel() is True
    other = clock.add(target_ns + LEAD_NS, FakeRequest("other", fired))
    await asyncio.wait_for(other, WAIT_S)

    assert fired == ["other"]
    assert clock.pending_targets == []


async def test_request_joins_pending_instant(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() + LEAD_NS

    first = clock.add(target_ns, FakeRequest("first", fired))
    await asyncio.sleep(0.005)
    second = clock.add(target_ns, FakeRequest("second", fired))

    assert clock.pending_targets == [target_ns]
    outcomes = await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    assert fired == ["first", "second"]
    assert all(outcome.fired for outcome in outcomes)


async def test_past_target_fires_at_once(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() - 1_000_000

    outcome = await asyncio.wait_for(clock.add(target_ns, FakeRequest("late", fired)), WAIT_S)

    assert fired == ["late"]
    assert outcome.sent_ns is not None
    assert outcome.latency_ns is not None and outcome.latency_ns > 0


async def test_request_added_after_instant_fires(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() + LEAD_NS

    await asyncio.wait_for(clock.add(target_ns, FakeRequest("on time", fired)), WAIT_S)
    outcome = await asyncio.wait_for(clock.add(target_ns, FakeRequest("after", fired)), WAIT_S)

    assert fired == ["on time", "after"]
    assert outcome.sent_ns is not None and outcome.sent_ns >= target_ns


async def test_not_alive_request_is_not_written(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() + LEAD_NS

    dead = clock.add(target_ns, FakeRequest("dead", fired, alive=False))
    live = clock.add(target_ns, FakeRequest("live", fired))
    dead_outcome, live_outcome = await asyncio.wait_for(asyncio.gather(dead, live), WAIT_S)

    assert fired == ["live"]
    assert dead_outcome == FireOutcome(target_ns, None)
    assert not dead_outcome.fired
    assert dead_outcome.latency_ns is None
    assert live_outcome.fired


async def test_closed_stage_falls_back_once(
    server: RecordingServer, stage: StageFactory, clock: FireClock
) -> None:
    live, dead = await _stage_many(server, stage, 2)
    await server.connections[1].close()
    await asyncio.wait_for(_until_not_alive(dead), WAIT_S)
    target_ns = time.time_ns() + LEAD_NS

    live_outcome, dead_outcome = await asyncio.wait_for(
        asyncio.gather(clock.add(target_ns, live), clock.add(target_ns, dead)), WAIT_S
    )
    assert live_outcome.fired
    assert not dead_outcome.fired
    assert dead.sent_ns is None

    async with httpx.AsyncClient() as client:
        response = await send_fresh(dead.url, headers=BOOK_HEADERS, body=BOOK_BODY, timeout_s=WAIT_S, client=client)
    await server.wait_for(lambda: len(server.requests) == 2)

    assert response.fallback is True
    assert server.connections[1].requests == []
    assert len(server.connections[0].requests) == 1
    assert len(server.connections[2].requests) == 1


async def test_failed_write_reaches_its_owner_only(clock: FireClock) -> None:
    fired: list[str] = []
    target_ns = time.time_ns() + LEAD_NS
    error = ConnectionLost("connection to http://127.0.0.1/ lost")

    failing = clock.add(target_ns, FakeRequest("failing", fired, error=error))
    healthy = clock.add(target_ns, FakeRequest("healthy", fired))
    results = await asyncio.wait_for(asyncio.gather(failing, healthy, return_exceptions=True), WAIT_S)

    assert results[0] is error
    assert isinstance(results[1], FireOutcome)
    assert fired == ["healthy"]


async def test_aclose_cancels_pending_tickets() -> None:
    fired: list[str] = []
    fire_clock = FireClock()
    ticket = fire_clock.add(time.time_ns() + 10 * LEAD_NS, FakeRequest("pending", fired))

    # Awaited inline, so aclose runs before the instant's task has taken its first step.
    async with asyncio.timeout(WAIT_S):
        await fire_clock.aclose()

    assert ticket.outcome.cancelled()
    assert fired == []
    with pytest.raises(RuntimeError, match="closed"):
        fire_clock.add(time.time_ns(), FakeRequest("after close", fired))


async def test_aclose_cancels_sleeping_instant() -> None:
    fired: list[str] = []
    fire_clock = FireClock()
    ticket = fire_clock.add(time.time_ns() + 10 * LEAD_NS, FakeRequest("pending", fired))
    await asyncio.sleep(0.001)

    await asyncio.wait_for(fire_clock.aclose(), WAIT_S)

    assert ticket.outcome.cancelled()
    assert fired == []
    assert fire_clock.pending_targets == []


def test_negative_guard_is_rejected() -> None:
    with pytest.raises(ValueError, match="guard_ns"):
        FireClock(guard_ns=-1)


async def _await_outcome(ticket: FireTicket) -> None:
    await ticket


async def _until_not_alive(staged: StagedRequest) -> None:
    while staged.is_alive():
        await asyncio.sleep(0.001)

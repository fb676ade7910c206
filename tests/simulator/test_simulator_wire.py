"""HTTP/1.1 over raw sockets: kernel arrival stamps, keep-alive, pipelining, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import h11
import httpx

from prebook_simulator import SimulatorServer

DEADLINE_S = 5.0


def book_request(sim, class_id: int = 1) -> bytes:
    body = f"id={class_id}&day={sim.day}&insist=0&familyId=".encode()
    head = (
        "POST /api/book HTTP/1.1\r\n"
        f"Host: box.aimharder.com\r\n"
        f"Cookie: amhrdrauth={sim.cookie}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "X-Requested-With: XMLHttpRequest\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[tuple[int, dict]]:
    """Read ``count`` HTTP responses with h11 and return their statuses and JSON bodies."""
    client = h11.Connection(h11.CLIENT)
    # h11 only parses responses after it has seen a request go out.
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    responses = []
    status = 0
    body = b""
    while len(responses) < count:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), DEADLINE_S)
            assert data, "the simulator closed the connection before answering"
            client.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
            body = b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            responses.append((status, json.loads(body)))
            if len(responses) < count:
                client.start_next_cycle()
                client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
                client.send(h11.EndOfMessage())

    return responses


async def wait_for_open_connections(server, condition) -> None:
    """Poll the server's open connection count until ``condition`` holds, within DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition(server.open_connections):
        assert time.monotonic() < deadline, f"open connections stayed at {server.open_connections}"
        await asyncio.sleep(0.01)


async def test_arrival_is_final_byte(sim):
    await sim.add_class()
    await sim.add_session()
    request = book_request(sim)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)

    writer.write(request[:-1])
    await writer.drain()
    await asyncio.sleep(0.2)
    pending = await sim.recorded()
    before_last_write_ns = time.time_ns()
    writer.write(request[-1:])
    await writer.drain()
    [(status, answer)] = await read_responses(reader, 1)
    writer.close()
    await writer.wait_closed()

    [entry] = await sim.recorded()
    assert pending == []
    assert status == 200
    assert answer["bookState"] == 1
    assert entry["stamp_source"] == "kernel"
    assert entry["arrival_ns"] >= before_last_write_ns


async def test_keep_alive_serves_requests(sim):
    await sim.add_class(id=1)
    await sim.add_class(id=2)
    await sim.add_session()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)

    writer.write(book_request(sim, class_id=1))
    [first] = await read_responses(reader, 1)
    writer.write(book_request(sim, class_id=2))
    [second] = await read_responses(reader, 1)
    writer.close()
    await writer.wait_closed()

    assert first[1]["bookState"] == 1
    assert second[1]["bookState"] == 1
    entries = await sim.recorded()
    assert entries[0]["connection"] == entries[1]["connection"]
    assert entries[0]["arrival_ns"] <= entries[1]["arrival_ns"]


async def test_pipelined_requests_answered_in_order(sim):
    await sim.add_class(id=1)
    await sim.add_session()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)

    writer.write(book_request(sim) + book_request(sim))
    responses = await read_responses(reader, 2)
    writer.close()
    await writer.wait_closed()

    assert [answer["bookState"] for _, answer in responses] == [1, -12]
    entries = await sim.recorded()
    assert [entry["seq"] for entry in entries] == [1, 2]
    assert entries[0]["arrival_ns"] == entries[1]["arrival_ns"]


async def test_host_header_recorded_and_ignored(sim):
    await sim.add_class()
    await sim.add_session()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)

    writer.write(book_request(sim))
    [(_, answer)] = await read_responses(reader, 1)
    writer.close()
    await writer.wait_closed()

    [entry] = await sim.recorded()
    assert answer["bookState"] == 1
    assert entry["headers"]["host"] == "box.aimharder.com"


async def test_malformed_request_rejected(sim):
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)

    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    [(status, answer)] = await read_responses(reader, 1)
    rest = await asyncio.wait_for(reader.read(), DEADLINE_S)
    writer.close()
    await writer.wait_closed()

    assert status == 400
    assert "malformed HTTP request" in answer["error"]
    assert rest == b""


async def test_connection_close_honoured(sim):
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)

    writer.write(b"GET /_sim/config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    [(status, _)] = await read_responses(reader, 1)
    rest = await asyncio.wait_for(reader.read(), DEADLINE_S)
    writer.close()
    await writer.wait_closed()

    assert status == 200
    assert rest == b""


async def test_stop_closes_idle_connections(simulator):
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    writer.write(b"GET /_sim/config HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_responses(reader, 1)

    await simulator.stop()
    rest = await asyncio.wait_for(reader.read(), DEADLINE_S)
    writer.close()

    assert rest == b""


async def test_many_concurrent_connections(sim):
    await sim.add_class(capacity=3)
    cookies = [f"cookie-{index}" for index in range(20)]
    for index, cookie in enumerate(cookies):
        await sim.add_session(user=f"user{index}@example.com", cookie=cookie)

    answers = await asyncio.gather(*(sim.book(cookie, insist=1) for cookie in cookies))

    states = sorted(answer.json()["bookState"] for answer in answers)
    assert states == [0] * 17 + [1] * 3


async def test_user_stamps_without_timestamp_option(monkeypatch):
    monkeypatch.setattr("prebook_simulator.stamps.SO_TIMESTAMPNS", None)

    async with SimulatorServer("127.0.0.1", 0) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            before_ns = time.time_ns()
            await client.get("/api/bookings")
            after_ns = time.time_ns()
            entries = (await client.get("/_sim/requests")).json()["requests"]

    [entry] = entries
    assert entry["stamp_source"] == "user"
    assert before_ns <= entry["arrival_ns"] <= after_ns


async def test_partial_request_closed_quietly(sim, caplog):
    await sim.add_class()
    await sim.add_session()
    request = book_request(sim)
    # The httpx client of the fixture keeps its own connection open.
    baseline = sim.server.open_connections
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.server.port)
    writer.write(request[:-1])
    await writer.drain()
    await wait_for_open_connections(sim.server, lambda count: count > baseline)

    writer.close()
    await writer.wait_closed()
    await wait_for_open_connections(sim.server, lambda count: count == baseline)

    assert await sim.recorded() == []
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert (await sim.client.get("/_sim/config")).status_code == 200

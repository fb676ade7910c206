"""Staged requests against loopback servers: what the server receives before and after firing."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl

import httpx
import pytest
from conftest import StageFactory
from recording_server import BOOK_BODY, BOOK_HEADERS, WAIT_S, RecordingServer

from prebook_executor.fallback import send_fresh
from prebook_executor.staging import (
    ConnectFailed,
    ConnectionLost,
    FinalByteAlreadySent,
    InvalidResponse,
    ResponseTimeout,
    StagedRequest,
    StagingError,
    serialize_request,
    stage_request,
)


async def test_staged_request_holds_back_final_byte(server: RecordingServer, stage: StageFactory) -> None:
    url = server.url()
    expected = serialize_request(url, headers=BOOK_HEADERS, body=BOOK_BODY)

    staged = await stage(url)
    await server.wait_for(lambda: len(server.connections) == 1 and len(server.connections[0].raw) == len(expected) - 1)

    connection = server.connections[0]
    assert bytes(connection.raw) == expected[:-1]
    assert connection.requests == []
    assert staged.is_alive()

    staged.send_final_byte()
    await server.wait_for(lambda: len(connection.requests) == 1)

    assert bytes(connection.raw) == expected
    assert len(server.requests) == 1


async def test_fired_request_matches_arguments(server: RecordingServer, stage: StageFactory) -> None:
    staged = await stage(server.url("/api/book?source=test"))
    staged.send_final_byte()
    await server.wait_for(lambda: len(server.requests) == 1)

    request = server.requests[0]
    assert request.method == "POST"
    assert request.target == "/api/book?source=test"
    assert request.body == BOOK_BODY
    assert request.headers[0] == ("host", f"127.0.0.1:{server.port}")
    assert request.headers[1:4] == [(name.lower(), value) for name, value in BOOK_HEADERS]
    assert request.headers[4] == ("content-length", str(len(BOOK_BODY)))
    assert [name for name, _ in request.headers].count("cookie") == 1


def test_serialize_request_keeps_header_order_and_case() -> None:
    headers = [("X-B", "2"), ("X-A", "1"), ("X-A", "again")]

    data = serialize_request("http://127.0.0.1:8080/p", method="GET", headers=headers, body=b"")

    assert data == b"GET /p HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-B: 2\r\nX-A: 1\r\nX-A: again\r\n\r\n"


def test_serialize_request_rejects_wrong_content_length() -> None:
    headers = [("Content-Length", "3")]

    with pytest.raises(ValueError, match="Content-Length"):
        serialize_request("http://127.0.0.1:8080/p", headers=headers, body=b"too long")


def test_serialize_request_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="scheme"):
        serialize_request("ftp://127.0.0.1/p", headers=[], body=b"")


async def test_read_response_parses_json(server: RecordingServer, stage: StageFactory) -> None:
    server.response_json = {"bookState": 1, "id": "987"}
    staged = await stage(server.url())

    sent_ns = staged.send_final_byte()
    response = await staged.read_response(WAIT_S)

    assert response.status_code == 200
    assert response.json() == {"bookState": 1, "id": "987"}
    assert ("content-type", "application/json") in response.headers
    assert response.sent_ns == sent_ns
    assert response.received_ns >= sent_ns
    assert response.fallback is False


async def test_send_final_byte_twice_raises(server: RecordingServer, stage: StageFactory) -> None:
    staged = await stage(server.url())
    staged.send_final_byte()

    with pytest.raises(FinalByteAlreadySent):
        staged.send_final_byte()

    await server.wait_for(lambda: len(server.requests) == 1)
    assert len(server.connections[0].raw) == len(serialize_request(server.url(), headers=BOOK_HEADERS, body=BOOK_BODY))


async def test_read_response_before_firing_raises(server: RecordingServer, stage: StageFactory) -> None:
    staged = await stage(server.url())

    with pytest.raises(StagingError, match="before send_final_byte"):
        await staged.read_response(WAIT_S)


async def test_closed_connection_uses_fallback_once(server: RecordingServer, stage: StageFactory) -> None:
    url = server.url()
    staged = await stage(url)
    await server.wait_for(lambda: len(server.connections) == 1)

    await server.connections[0].close()
    await asyncio.wait_for(_until_not_alive(staged), WAIT_S)

    with pytest.raises(ConnectionLost):
        staged.send_final_byte()

    async with httpx.AsyncClient() as client:
        response = await send_fresh(url, headers=BOOK_HEADERS, body=BOOK_BODY, timeout_s=WAIT_S, client=client)

    assert response.fallback is True
    assert response.status_code == 200
    assert response.json() == server.response_json
    assert len(server.requests) == 1
    assert server.connections[0].requests == []

    fresh_request = server.requests[0]
    assert fresh_request.body == BOOK_BODY
    assert ("cookie", "amhrdrauth=test-session; PHPSESSID=test-php") in fresh_request.headers


async def test_early_server_bytes_mark_not_alive(server: RecordingServer, stage: StageFactory) -> None:
    staged = await stage(server.url())
    await server.wait_for(lambda: len(server.connections) == 1)

    server.connections[0].writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
    await asyncio.wait_for(_until_not_alive(staged), WAIT_S)

    assert not staged.is_alive()


async def test_tls_staging_sends_sni(
    tls_server: RecordingServer, stage: StageFactory, client_ssl_context: ssl.SSLContext
) -> None:
    url = tls_server.url()
    expected = serialize_request(url, headers=BOOK_HEADERS, body=BOOK_BODY)

    staged = await stage(url, ssl_context=client_ssl_context)
    await tls_server.wait_for(
        lambda: len(tls_server.connections) == 1 and len(tls_server.connections[0].raw) == len(expected) - 1
    )

    assert tls_server.server_names == ["localhost"]
    assert tls_server.connections[0].requests == []

    staged.send_final_byte()
    response = await staged.read_response(WAIT_S)

    assert bytes(tls_server.connections[0].raw) == expected
    assert response.status_code == 200
    assert tls_server.requests[0].headers[0] == ("host", f"localhost:{tls_server.port}")


async def test_tls_close_marks_not_alive(
    tls_server: RecordingServer, stage: StageFactory, client_ssl_context: ssl.SSLContext
) -> None:
    staged = await stage(tls_server.url(), ssl_context=client_ssl_context)
    await tls_server.wait_for(lambda: len(tls_server.connections) == 1)

    await tls_server.connections[0].close()
    await asyncio.wait_for(_until_not_alive(staged), WAIT_S)

    with pytest.raises(ConnectionLost):
        staged.send_final_byte()
    assert tls_server.requests == []


async def test_tls_staging_rejects_unknown_ca(tls_server: RecordingServer) -> None:
    # Without an SSL context the system trust store applies, and it lacks the test CA.
    with pytest.raises(ConnectFailed, match=re.escape(tls_server.url())):
        await stage_request(tls_server.url(), headers=BOOK_HEADERS, body=BOOK_BODY, connect_timeout_s=WAIT_S)

    assert tls_server.requests == []


async def test_silent_server_times_out(server: RecordingServer, stage: StageFactory) -> None:
    server.mode = "silent"
    staged = await stage(server.url())
    staged.send_final_byte()

    with pytest.raises(ResponseTimeout) as caught:
        await staged.read_response(0.2)

    assert server.url() in str(caught.value)
    assert "amhrdrauth" not in str(caught.value)


async def test_server_close_raises_connection_lost(server: RecordingServer, stage: StageFactory) -> None:
    server.mode = "close"
    staged = await stage(server.url())
    staged.send_final_byte()

    with pytest.raises(ConnectionLost, match=re.escape(server.url())):
        await staged.read_response(WAIT_S)


async def test_garbage_response_raises_invalid(server: RecordingServer, stage: StageFactory) -> None:
    server.mode = "garbage"
    staged = await stage(server.url())
    staged.send_final_byte()

    with pytest.raises(InvalidResponse, match=re.escape(server.url())):
        await staged.read_response(WAIT_S)


async def test_refused_connection_raises_connect_failed() -> None:
    # A port that this test bound and released, so nothing listens on it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(ConnectFailed, match=str(port)):
        await stage_request(
            f"http://127.0.0.1:{port}/api/book",
            headers=BOOK_HEADERS,
            body=BOOK_BODY,
            connect_timeout_s=WAIT_S,
        )


async def _until_not_alive(staged: StagedRequest) -> None:
    while staged.is_alive():
        await asyncio.sleep(0.001)

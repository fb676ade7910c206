"""Fixtures for the executor tests: loopback servers, a test CA and staged requests."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from recording_server import BOOK_BODY, BOOK_HEADERS, WAIT_S, RecordingServer

from prebook_executor.staging import StagedRequest, stage_request

@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    recording_server = RecordingServer()
    await recording_server.start()
    yield recording_server
    await recording_server.aclose()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(tls_ca: trustme.CA) -> AsyncIterator[RecordingServer]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(server_context)
    recording_server = RecordingServer(ssl_context=server_context, host="localhost")
    await recording_server.start()
    yield recording_server
    await recording_server.aclose()


@pytest.fixture
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


StageFactory = Callable[..., Awaitable[StagedRequest]]


@pytest.fixture
async def stage() -> AsyncIterator[StageFactory]:
    """Stage a booking request to a URL, closing every staged connection at teardown."""
    staged_requests: list[StagedRequest] = []

    async def stage_booking(url: str, **overrides: object) -> StagedRequest:
        arguments: dict[str, object] = {
            "headers": BOOK_HEADERS,
            "body": BOOK_BODY,
            "connect_timeout_s": WAIT_S,
        }
        arguments.update(overrides)
        staged = await stage_request(url, **arguments)  # type: ignore[arg-type]
        staged_requests.append(staged)
        return staged

    yield stage_booking
    for staged in staged_requests:
        await staged.aclose()

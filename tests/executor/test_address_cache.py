"""Host name resolution for staged connections: one lookup per host, shared and kept."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from recording_server import BOOK_BODY, BOOK_HEADERS, WAIT_S, RecordingServer

from prebook_executor.address_cache import AddressCache
from prebook_executor.http1 import prepare_request
from prebook_executor.staging import ConnectFailed, stage_prepared


@pytest.fixture
async def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hosts passed to the running loop's getaddrinfo, which still resolves them for real."""
    looked_up: list[str] = []
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo

    async def counting_getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        return await real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counting_getaddrinfo)
    return looked_up


async def test_cache_resolves_host_once(lookups: list[str]) -> None:
    cache = AddressCache()

    first = await cache.resolve("localhost", 8080)
    second = await cache.resolve("localhost", 8080)

    assert lookups == ["localhost"]
    assert first == second
    assert all(port == 8080 for _, _, port in first)


async def test_cache_shares_concurrent_lookup(lookups: list[str]) -> None:
    cache = AddressCache()

    results = await asyncio.gather(*(cache.resolve("localhost", 8080) for _ in range(4)))

    assert lookups == ["localhost"]
    assert all(result == results[0] for result in results)


async def test_cache_skips_ip_literals(lookups: list[str]) -> None:
    cache = AddressCache()

    ipv4 = await cache.resolve("127.0.0.1", 80)
    ipv6 = await cache.resolve("::1", 443)

    assert lookups == []
    assert ipv4 == [(socket.AF_INET, "127.0.0.1", 80)]
    assert ipv6 == [(socket.AF_INET6, "::1", 443)]


async def test_cache_expires_after_ttl(lookups: list[str]) -> None:
    cache = AddressCache(ttl_s=0.0)

    await cache.resolve("localhost", 8080)
    await cache.resolve("localhost", 8080)

    assert lookups == ["localhost", "localhost"]


async def test_forget_makes_next_lookup(lookups: list[str]) -> None:
    cache = AddressCache()

    await cache.resolve("localhost", 8080)
    cache.forget("localhost", 8080)
    await cache.resolve("localhost", 8080)

    assert lookups == ["localhost", "localhost"]


async def test_staged_connections_share_lookup(
    lookups: list[str], tls_server: RecordingServer, client_ssl_context: ssl.SSLContext
) -> None:
    cache = AddressCache()
    url = tls_server.url()
    prepared = prepare_request(url, headers=BOOK_HEADERS, body=BOOK_BODY)

    staged = await asyncio.gather(
        *(stage_prepared(prepared, url, connect_timeout_s=WAIT_S, ssl_context=client_ssl_context, addresses=cache) for _ in range(3))
    )
    try:
        await tls_server.wait_for(lambda: len(tls_server.connections) == 3)
        for connection in staged:
            connection.send_final_byte()
        await tls_server.wait_for(lambda: len(tls_server.requests) == 3)
        responses = [await connection.read_response(WAIT_S) for connection in staged]
    finally:
        for connection in staged:
            await connection.aclose()

    assert lookups == ["localhost"]
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert all(request.body == BOOK_BODY for request in tls_server.requests)


async def test_refused_connect_forgets_addresses(lookups: list[str], server: RecordingServer) -> None:
    cache = AddressCache()
    port = server.port
    await server.aclose()
    url = f"http://localhost:{port}/api/book"
    prepared = prepare_request(url, headers=BOOK_HEADERS, body=BOOK_BODY)

    for _ in range(2):
        with pytest.raises(ConnectFailed):
            await stage_prepared(prepared, url, connect_timeout_s=WAIT_S, addresses=cache)

    assert lookups == ["localhost", "localhost"]

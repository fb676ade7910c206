"""HTTP/1.1 requests staged on open connections, so that firing one writes a single byte.

A staged request has every byte on the wire except the last one. A server cannot act on
a request before its last byte arrives, so the work left at the target instant is one
write on an open socket. The errors are in ``staging_errors.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

import h11

from prebook_executor.address_cache import AddressCache
from prebook_executor.http1 import Endpoint, PreparedRequest, StagedResponse, prepare_request, serialize_request
from prebook_executor.staging_errors import (
    ConnectFailed,
    ConnectionLost,
    FinalByteAlreadySent,
    InvalidResponse,
    ResponseTimeout,
    StagingError,
)

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "FinalByteAlreadySent",
    "InvalidResponse",
    "ResponseTimeout",
    "StagedRequest",
    "StagedResponse",
    "StagingError",
    "serialize_request",
    "stage_prepared",
    "stage_request",
]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 2.0


async def stage_request(
    url: str,
    *,
    method: str = "POST",
    headers: list[tuple[str, str]],
    body: bytes,
    connect_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> StagedRequest:
    """Open a connection to the URL's host and write all of the request but its final byte.

    An https URL gets TLS with SNI for the URL's host, verified with ``ssl_context`` or
    with the system's trust store. ``headers`` is a list of pairs so that order and
    duplicates are kept, and the cookies belong in one ``Cookie`` header. The
    connection carries exactly one request.

    Raises ValueError for an invalid request and ConnectFailed when the connection or
    the handshake fails or takes longer than ``connect_timeout_s``.
    """
    prepared = prepare_request(url, method=method, headers=headers, body=body)
    return await stage_prepared(prepared, url, connect_timeout_s=connect_timeout_s, ssl_context=ssl_context)


async def stage_prepared(
    prepared: PreparedRequest,
    url: str,
    *,
    connect_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    addresses: AddressCache | None = None,
) -> StagedRequest:
    """Stage ``prepared``, the request to ``url``, as ``stage_request`` does.

    Several connections can carry one prepared request. With ``addresses`` the host
    name is resolved through that cache, and the addresses are tried in order until
    one connects. Raises the errors of ``stage_request``.
    """
    endpoint = prepared.endpoint
    if endpoint.scheme == "http" and ssl_context is not None:
        raise ValueError(f"An SSL context was given for the plain http URL {url}")

    tls: ssl.SSLContext | None = None
    if endpoint.scheme == "https":
        tls = ssl_context
        if tls is None:
            tls = ssl.create_default_context()
            tls.set_alpn_protocols(["http/1.1"])

    try:
        async with asyncio.timeout(connect_timeout_s):
            transport, receiver = await _connect(endpoint, tls, addresses)
    except TimeoutError as exc:
        raise ConnectFailed(f"Timed out after {connect_timeout_s} s connecting to {url}") from exc
    except OSError as exc:
        raise ConnectFailed(f"Connecting to {url} failed: {exc}") from exc

    # asyncio already disables Nagle's algorithm on TCP sockets. Setting it here makes
    # the requirement explicit: the final byte must leave without waiting for an ACK.
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    request_bytes = prepared.data
    staged = StagedRequest(url, transport, receiver, prepared)
    # Bytes the kernel does not take at once stay in the transport's buffer, ahead of
    # the final byte, and the event loop writes them as the socket allows.
    transport.write(request_bytes[:-1])
    if not staged.is_alive():
        staged.abort()
        raise ConnectionLost(f"{url} closed the connection while the request was staged")

    log.debug(
        "Staged %s %s: %d of %d bytes written, %d bytes still buffered",
        prepared.method,
        url,
        len(request_bytes) - 1,
        len(request_bytes),
        transport.get_write_buffer_size(),
    )
    return staged


async def _connect(
    endpoint: Endpoint, tls: ssl.SSLContext | None, addresses: AddressCache | None
) -> tuple[asyncio.Transport, _Receiver]:
    loop = asyncio.get_running_loop()
    server_hostname = endpoint.host if tls is not None else None
    if addresses is None:
        return await loop.create_connection(_Receiver, endpoint.host, endpoint.port, ssl=tls, server_hostname=server_hostname)

    # Like asyncio's own connect, try each address in order and raise the last error.
    last_error: OSError | None = None
    for _, host, port in await addresses.resolve(endpoint.host, endpoint.port):
        try:
            return await loop.create_connection(_Receiver, host, port, ssl=tls, server_hostname=server_hostname)
        except OSError as exc:
            last_error = exc
    addresses.forget(endpoint.host, endpoint.port)
    raise last_error if last_error is not None else OSError(f"No address to connect to for {endpoint.host}")


class _Receiver(asyncio.Protocol):
    """The protocol of a staged connection: it keeps what the server sends until it is read.

    A protocol instead of asyncio streams and a reading task, because thousands of
    connections may wait parked: with streams, a task and h11 state, tracemalloc counted
    5.7 KB per staged connection, and 2.1 KB with this protocol (2,000 connections).
    """

    __slots__ = ("incoming", "first_read_ns", "closed", "_arrival")

    def __init__(self) -> None:
        # Each item is a chunk received, b"" at EOF, or the OSError that ended the connection.
        self.incoming: list[bytes | OSError] = []
        self.first_read_ns: int | None = None
        self.closed = False
        self._arrival: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self.first_read_ns is None:
            self.first_read_ns = time.time_ns()
        self._push(data)

    def eof_received(self) -> bool:
        self._push(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self._push(exc if isinstance(exc, OSError) else b"")

    def _push(self, item: bytes | OSError) -> None:
        self.incoming.append(item)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def pop(self) -> bytes | OSError:
        while not self.incoming:
            self._arrival = asyncio.get_running_loop().create_future()
            await self._arrival
        return self.incoming.pop(0)


class StagedRequest:
    """Open connection that carries one request without its final byte.

    The connection's protocol keeps whatever the server sends from the start, so that a
    close, a reset or an early response makes ``is_alive`` false before the final byte
    is written.
    """

    __slots__ = ("url", "_transport", "_receiver", "_prepared", "_sent_ns", "_eof_read")

    def __init__(self, url: str, transport: asyncio.Transport, receiver: _Receiver, prepared: PreparedRequest) -> None:
        self.url = url
        self._transport = transport
        self._receiver = receiver
        # The request is shared by the booking's connections. Each connection's h11 state
        # is made only when its response is read, which keeps parked connections small.
        self._prepared = prepared
        self._sent_ns: int | None = None
        self._eof_read = False

    @property
    def sent_ns(self) -> int | None:
        """``time.time_ns()`` taken just before the final byte was written, or None."""
        return self._sent_ns

    def is_alive(self) -> bool:
        """Return whether the connection is open and the server has sent nothing yet.

        The state is what the event loop last saw, so call this after the loop has run,
        as ``FireClock`` does right before its spin.
        """
        if self._transport.is_closing():
            return False
        return not self._receiver.closed and not self._receiver.incoming

    def send_final_byte(self) -> int:
        """Write the final byte of the request and return ``time.time_ns()`` taken just before.

        The write is synchronous, so many requests can be fired back to back with no
        await in between. Raises FinalByteAlreadySent on a second call and
        ConnectionLost when ``is_alive`` is false.
        """
        if self._sent_ns is not None:
            raise FinalByteAlreadySent(f"The final byte of the request to {self.url} was already sent")
        if not self.is_alive():
            raise ConnectionLost(
                f"The connection to {self.url} is closed or the server already sent data, "
                "so the final byte was not sent"
            )

        sent_ns = time.time_ns()
        self._sent_ns = sent_ns
        self._transport.write(self._prepared.final_byte)
        return sent_ns

    async def read_response(self, timeout_s: float) -> StagedResponse:
        """Read and parse the response to the fired request.

        Raises ResponseTimeout when no complete response arrives within ``timeout_s``,
        ConnectionLost when the server closes or resets the connection first, and
        InvalidResponse when the bytes are not valid HTTP/1.1.
        """
        if self._sent_ns is None:
            raise StagingError(f"Cannot read a response from {self.url} before send_final_byte")

        try:
            async with asyncio.timeout(timeout_s):
                response, body = await self._read_events()
        except TimeoutError as exc:
            raise ResponseTimeout(f"No complete response from {self.url} within {timeout_s} s") from exc

        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers]
        first_read_ns = self._receiver.first_read_ns
        received_ns = first_read_ns if first_read_ns is not None else time.time_ns()
        return StagedResponse(
            status_code=response.status_code,
            headers=headers,
            body=body,
            sent_ns=self._sent_ns,
            received_ns=received_ns,
        )

    async def _read_events(self) -> tuple[h11.Response, bytes]:
        connection = self._prepared.start_connection()
        response: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 also raises this for an EOF in the middle of a response.
                if self._eof_read:
                    raise ConnectionLost(f"{self.url} closed the connection mid-response") from exc
                raise InvalidResponse(f"Invalid HTTP/1.1 response from {self.url}: {exc}") from exc

            if event is h11.NEED_DATA:
                chunk = await self._receiver.pop()
                if isinstance(chunk, OSError):
                    raise ConnectionLost(f"Reading the response from {self.url} failed: {chunk}") from chunk
                self._eof_read = not chunk
                connection.receive_data(chunk)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and response is not None:
                return response, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionLost(f"{self.url} closed the connection without a response")
            # An informational (1xx) response is skipped because the final one follows it.

    def abort(self) -> None:
        """Close the connection at once, discarding unsent data."""
        self._transport.abort()

    async def aclose(self) -> None:
        """Close the connection, aborting it when a clean close takes over 2 s."""
        if self._receiver.closed:
            return
        self._transport.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                while not self._receiver.closed:
                    await self._receiver.pop()
        except TimeoutError:
            log.debug("Aborting the connection to %s after a close that took over %.0f s", self.url, _CLOSE_TIMEOUT_S)
            self._transport.abort()

    async def __aenter__(self) -> StagedRequest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

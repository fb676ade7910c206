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

_READ_SIZE = 65536
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
            reader, writer = await _connect(endpoint, tls, addresses)
    except TimeoutError as exc:
        raise ConnectFailed(f"Timed out after {connect_timeout_s} s connecting to {url}") from exc
    except OSError as exc:
        raise ConnectFailed(f"Connecting to {url} failed: {exc}") from exc

    # asyncio already disables Nagle's algorithm on TCP sockets. Setting it here makes
    # the requirement explicit: the final byte must leave without waiting for an ACK.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    request_bytes = prepared.data
    staged = StagedRequest(url, reader, writer, prepared.start_connection(), request_bytes[-1:])
    writer.write(request_bytes[:-1])
    try:
        await writer.drain()
    except OSError as exc:
        staged.abort()
        raise ConnectionLost(f"{url} closed the connection while the request was staged") from exc
    except asyncio.CancelledError:
        staged.abort()
        raise

    log.debug(
        "Staged %s %s: %d of %d bytes written, %d bytes still buffered",
        prepared.method,
        url,
        len(request_bytes) - 1,
        len(request_bytes),
        writer.transport.get_write_buffer_size(),
    )
    return staged


async def _connect(
    endpoint: Endpoint, tls: ssl.SSLContext | None, addresses: AddressCache | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    server_hostname = endpoint.host if tls is not None else None
    if addresses is None:
        return await asyncio.open_connection(endpoint.host, endpoint.port, ssl=tls, server_hostname=server_hostname)

    # Like asyncio's own connect, try each address in order and raise the last error.
    last_error: OSError | None = None
    for _, host, port in await addresses.resolve(endpoint.host, endpoint.port):
        try:
            return await asyncio.open_connection(host, port, ssl=tls, server_hostname=server_hostname)
        except OSError as exc:
            last_error = exc
    addresses.forget(endpoint.host, endpoint.port)
    raise last_error if last_error is not None else OSError(f"No address to connect to for {endpoint.host}")


class StagedRequest:
    """Open connection that carries one request without its final byte.

    A background task reads the connection from the start, so that a close, a reset or
    an early response from the server makes ``is_alive`` false before the final byte
    is written.
    """

    def __init__(
        self,
        url: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        h11_connection: h11.Connection,
        final_byte: bytes,
    ) -> None:
        self.url = url
        self._writer = writer
        self._reader = reader
        self._h11 = h11_connection
        self._final_byte = final_byte
        self._sent_ns: int | None = None
        self._first_read_ns: int | None = None
        self._eof_read = False

        # Each item is a chunk read, b"" at EOF, or the OSError that ended reading. A list
        # and one future take far less memory than an asyncio.Queue, which matters for
        # thousands of parked connections.
        self._incoming: list[bytes | OSError] = []
        self._arrival: asyncio.Future[None] | None = None
        self._receiver = asyncio.create_task(self._receive(), name=f"staged-receive {url}")

    @property
    def sent_ns(self) -> int | None:
        """``time.time_ns()`` taken just before the final byte was written, or None."""
        return self._sent_ns

    async def _receive(self) -> None:
        try:
            while True:
                chunk = await self._reader.read(_READ_SIZE)
                if chunk and self._first_read_ns is None:
                    self._first_read_ns = time.time_ns()

                self._push(chunk)
                if not chunk:
                    return
        except OSError as exc:
            self._push(exc)

    def _push(self, item: bytes | OSError) -> None:
        self._incoming.append(item)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def _pop(self) -> bytes | OSError:
        while not self._incoming:
            self._arrival = asyncio.get_running_loop().create_future()
            await self._arrival
        return self._incoming.pop(0)

    def is_alive(self) -> bool:
        """Return whether the connection is open and the server has sent nothing yet.

        The state is what the event loop last saw, so call this after the loop has run,
        as ``FireClock`` does right before its spin.
        """
        if self._writer.transport.is_closing():
            return False
        return not self._receiver.done() and not self._incoming

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
        self._writer.transport.write(self._final_byte)
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
        received_ns = self._first_read_ns if self._first_read_ns is not None else time.time_ns()
        return StagedResponse(
            status_code=response.status_code,
            headers=headers,
            body=body,
            sent_ns=self._sent_ns,
            received_ns=received_ns,
        )

    async def _read_events(self) -> tuple[h11.Response, bytes]:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 also raises this for an EOF in the middle of a response.
                if self._eof_read:
                    raise ConnectionLost(f"{self.url} closed the connection mid-response") from exc
                raise InvalidResponse(f"Invalid HTTP/1.1 response from {self.url}: {exc}") from exc

            if event is h11.NEED_DATA:
                chunk = await self._pop()
                if isinstance(chunk, OSError):
                    raise ConnectionLost(f"Reading the response from {self.url} failed: {chunk}") from chunk
                self._eof_read = not chunk
                self._h11.receive_data(chunk)
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
        self._receiver.cancel()
        self._writer.transport.abort()

    async def aclose(self) -> None:
        """Close the connection, aborting it when a clean close takes over 2 s."""
        self._receiver.cancel()
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            log.debug("Aborting the connection to %s after a failed close: %r", self.url, exc)
            self._writer.transport.abort()

    async def __aenter__(self) -> StagedRequest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

"""Loopback HTTP/1.1 server that records every byte and request it receives."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import h11

# Upper bound of every wait in these tests, in seconds.
WAIT_S = 5.0

ResponseMode = Literal["json", "silent", "close", "garbage"]


@dataclass
class ReceivedRequest:
    """Complete request as the server parsed it.

    ``completed_ns`` is ``time.time_ns()`` taken when the server read the chunk that
    completed the request.
    """

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    completed_ns: int


@dataclass
class ServerConnection:
    """One accepted connection: raw bytes in arrival order and the requests parsed."""

    writer: asyncio.StreamWriter
    raw: bytearray = field(default_factory=bytearray)
    requests: list[ReceivedRequest] = field(default_factory=list)
    closed: bool = False

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), WAIT_S)
        except OSError:
            pass


class RecordingServer:
    """asyncio server on 127.0.0.1 that records what it receives.

    ``mode`` sets what it does after a complete request: "json" sends 200 with
    ``response_json``, "silent" sends nothing, "close" closes the connection, and
    "garbage" sends bytes that are not HTTP.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.ssl_context = ssl_context
        self.host = host
        self.mode: ResponseMode = "json"
        self.response_json: object = {"bookState": 1, "id": "42"}
        self.connections: list[ServerConnection] = []
        self.server_names: list[str | None] = []
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        if ssl_context is not None:
            ssl_context.sni_callback = self._record_server_name

    def _record_server_name(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(server_name)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/api/book") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        return [request for connection in self.connections for request in connection.requests]

    def _notify(self) -> None:
        # Waiters hold the old event, so replacing it wakes them all exactly once.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        """Wait until ``condition()`` is true, re-checking after each server event."""

        async def wait() -> None:
            while not condition():
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout_s)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = ServerConnection(writer)
        self.connections.append(connection)
        self._notify()

        h11_connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                chunk = await reader.read(65536)
                read_ns = time.time_ns()
                connection.raw += chunk
                h11_connection.receive_data(chunk)

                while True:
                    event = h11_connection.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                        break
                    if isinstance(event, h11.Request):
                        request = event
                        body = bytearray()
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage) and request is not None:
                        connection.requests.append(_received(request, bytes(body), read_ns))
                        if not await self._respond(h11_connection, writer):
                            return
                        if h11_connection.our_state is h11.DONE:
                            h11_connection.start_next_cycle()

                self._notify()
                if not chunk:
                    return
        except (OSError, h11.ProtocolError):
            pass
        finally:
            connection.closed = True
            self._notify()
            writer.close()

    async def _respond(self, h11_connection: h11.Connection, writer: asyncio.StreamWriter) -> bool:
        """Send the reply that ``mode`` sets and return whether the connection stays open."""
        self._notify()
        if self.mode == "silent":
            return True
        if self.mode == "close":
            return False
        if self.mode == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return True

        payload = json.dumps(self.response_json).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        writer.write(h11_connection.send(h11.Response(status_code=200, headers=headers)))
        writer.write(h11_connection.send(h11.Data(data=payload)))
        writer.write(h11_connection.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    async def aclose(self) -> None:
        for connection in self.connections:
            if not connection.closed:
                connection.writer.close()
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), WAIT_S)


def _received(request: h11.Request, body: bytes, completed_ns: int) -> ReceivedRequest:
    return ReceivedRequest(
        method=request.method.decode(),
        target=request.target.decode(),
        headers=[(name.decode(), value.decode()) for name, value in request.headers],
        body=body,
        completed_ns=completed_ns,
    )


BOOK_HEADERS = [
    ("X-Requested-With", "XMLHttpRequest"),
    ("Content-Type", "application/x-www-form-urlencoded"),
    ("Cookie", "amhrdrauth=test-session; PHPSESSID=test-php"),
]
BOOK_BODY = b"id=123456&day=20261210&insist=0&familyId="

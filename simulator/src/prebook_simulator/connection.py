"""One HTTP/1.1 connection: h11 parsing and framing over timestamped socket reads.

The connection reads chunk by chunk and lets h11 parse each one before the next read,
so the chunk that makes h11 produce EndOfMessage is the one that completed the
request. Its receive stamp becomes the request's arrival time. Responses on one
connection follow the order of the requests, and keep-alive and pipelining follow h11's rules.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import h11

from prebook_simulator.messages import JSON_CONTENT_TYPE, Request, Response, json_error
from prebook_simulator.stamps import StampedChunk, receive_stamped

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

RequestHandler = Callable[[Request], Awaitable[Response]]


class HttpConnection:
    """Serves the requests of one accepted, non-blocking socket until it closes."""

    def __init__(self, sock: socket.socket, peer: object, connection_id: int, handler: RequestHandler) -> None:
        self._sock = sock
        self._peer = peer
        self._connection_id = connection_id
        self._handler = handler
        self._h11 = h11.Connection(h11.SERVER)
        self._head: h11.Request | None = None
        self._body = bytearray()

    async def run(self) -> None:
        """Serve requests until the peer closes, an error occurs, or the task is cancelled.

        The socket is closed on every exit path.
        """
        try:
            while True:
                chunk = await receive_stamped(self._sock)
                if not await self._process(chunk):
                    return
        except OSError as error:
            logger.debug("Connection %s from %s failed: %s", self._connection_id, self._peer, error)
        finally:
            self._sock.close()
            logger.debug("Connection %s from %s closed", self._connection_id, self._peer)

    async def _process(self, chunk: StampedChunk) -> bool:
        """Feed ``chunk`` to h11, respond to the requests it completes, and return whether to keep reading."""
        try:
            self._h11.receive_data(chunk.data)
            return await self._handle_events(chunk)
        except h11.RemoteProtocolError as error:
            if not chunk.data:
                # Clients close spare connections that hold all of a request but its final byte.
                logger.debug("Connection %s from %s closed in the middle of a request", self._connection_id, self._peer)
                return False

            logger.warning(
                "Rejected a malformed HTTP request on connection %s from %s: %s",
                self._connection_id, self._peer, error,
            )
            await self._send_protocol_error(error)
            return False

    async def _handle_events(self, chunk: StampedChunk) -> bool:
        while True:
            event = self._h11.next_event()

            if event is h11.NEED_DATA:
                return True

            if isinstance(event, h11.ConnectionClosed):
                return False

            if isinstance(event, h11.Request):
                self._head = event
                self._body.clear()
                if self._h11.they_are_waiting_for_100_continue:
                    await self._send(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])))
                continue

            if isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY_BYTES:
                    message = f"request body exceeds {MAX_BODY_BYTES} bytes. Send a smaller body"
                    await self._send_response(json_error(413, message), closing=True)
                    return False
                continue

            if isinstance(event, h11.EndOfMessage):
                response = await self._answer(self._complete_request(chunk))
                await self._send_response(response)
                if h11.MUST_CLOSE in (self._h11.our_state, self._h11.their_state):
                    return False

                self._h11.start_next_cycle()
                continue

            # h11.PAUSED does not occur because each response is sent before the next request is parsed.
            logger.debug("Ignoring h11 event %r on connection %s", event, self._connection_id)

    def _complete_request(self, chunk: StampedChunk) -> Request:
        if self._head is None:
            raise RuntimeError("h11 produced EndOfMessage before a Request event")

        head = self._head
        self._head = None
        return Request(
            method=head.method.decode("ascii"),
            target=head.target.decode("latin-1"),
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers],
            body=bytes(self._body),
            arrival_ns=chunk.arrival_ns,
            stamp_source=chunk.stamp_source,
            connection_id=self._connection_id,
        )

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:
            # The server must keep running whatever a route does wrong.
            logger.exception(
                "Route for %s %s failed on connection %s", request.method, request.path, self._connection_id
            )
            return json_error(500, f"the simulator failed to respond to {request.method} {request.path}. See its log")

    async def _send_response(self, response: Response, *, closing: bool = False) -> None:
        body = response.encode_body()
        headers = [
            ("content-type", JSON_CONTENT_TYPE),
            ("content-length", str(len(body))),
            *response.headers,
        ]
        if closing:
            headers.append(("connection", "close"))

        head = h11.Response(status_code=response.status, headers=headers, reason=HTTPStatus(response.status).phrase)
        data = self._h11.send(head) + self._h11.send(h11.Data(data=body)) + self._h11.send(h11.EndOfMessage())
        await self._send(data)

    async def _send_protocol_error(self, error: h11.RemoteProtocolError) -> None:
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return

        status = error.error_status_hint
        try:
            await self._send_response(json_error(status, f"malformed HTTP request: {error}"), closing=True)
        except (OSError, h11.LocalProtocolError) as send_error:
            logger.debug("Sending the %s response on connection %s failed: %s", status, self._connection_id, send_error)

    async def _send(self, data: bytes | None) -> None:
        if data:
            await asyncio.get_running_loop().sock_sendall(self._sock, data)

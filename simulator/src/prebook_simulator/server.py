"""The simulator's TCP listener and the lifecycle of its connections."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from types import TracebackType

from prebook_simulator.app import Simulator
from prebook_simulator.connection import HttpConnection
from prebook_simulator.stamps import enable_kernel_stamps

logger = logging.getLogger(__name__)

_LISTEN_BACKLOG = 1024
_ACCEPT_RETRY_S = 0.1


class SimulatorServer:
    """Serve the AimHarder simulator over plain HTTP/1.1 on ``host``:``port``.

    ``port=0`` binds a free port, and ``port`` is the bound port after ``start()``. Every
    accepted socket has SO_TIMESTAMPNS on, so requests carry kernel arrival stamps.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, simulator: Simulator | None = None) -> None:
        self.host = host
        self.port = port
        self.simulator = simulator if simulator is not None else Simulator()
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._connection_ids = itertools.count(1)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Number of accepted connections that are not closed yet."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind and listen, then accept connections in a background task.

        Raises RuntimeError when already started and OSError when binding fails.
        """
        if self._listener is not None:
            raise RuntimeError("the simulator server is already started. Call stop() first")

        listener, stamped = _open_listener(self.host, self.port)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_task = asyncio.create_task(self._accept_connections(listener))

        if not stamped:
            logger.warning("SO_TIMESTAMPNS is unavailable, so arrival stamps come from time.time_ns() at read")
        logger.info("AimHarder simulator listening on %s", self.url)

    async def stop(self) -> None:
        """Close the listener and every open connection, then wait for their tasks."""
        if self._listener is None:
            return

        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
            self._accept_task = None

        self._listener.close()
        self._listener = None

        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

        logger.info("AimHarder simulator on port %s stopped", self.port)

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept_connections(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as error:
                # Running out of file descriptors is the usual cause, so wait for some to close.
                logger.error("Accepting a connection on port %s failed: %s", self.port, error)
                await asyncio.sleep(_ACCEPT_RETRY_S)
                continue

            self._start_connection(sock, peer)

    def _start_connection(self, sock: socket.socket, peer: object) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Linux copies the option from the listener, but set it anyway in case a platform does not.
        enable_kernel_stamps(sock)

        connection_id = next(self._connection_ids)
        logger.debug("Connection %s accepted from %s", connection_id, peer)

        connection = HttpConnection(sock, peer, connection_id, self.simulator.handle)
        task = asyncio.create_task(connection.run(), name=f"simulator-connection-{connection_id}")
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)


def _open_listener(host: str, port: int) -> tuple[socket.socket, bool]:
    """Return a listening non-blocking socket and whether SO_TIMESTAMPNS is on."""
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Enabled before listen() so that accepted sockets inherit it from the start.
        stamped = enable_kernel_stamps(listener)
        listener.bind(address)
        listener.listen(_LISTEN_BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise

    return listener, stamped

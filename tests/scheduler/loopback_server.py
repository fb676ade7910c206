"""An ASGI app served by uvicorn on 127.0.0.1 inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from support.polling import eventually
from support.ports import LOOPBACK

START_TIMEOUT_S = 10.0


class LoopbackServer:
    """Serves ``app`` on a port the kernel picks, from ``start()`` until ``aclose()``."""

    def __init__(self, app) -> None:
        self._app = app
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started: call start() first")
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        # Binding before uvicorn starts gives the port at once, with no race for it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        self.port = sock.getsockname()[1]

        config = uvicorn.Config(self._app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))

        def started() -> bool:
            if self._task.done():
                self._task.result()
                raise RuntimeError("uvicorn exited before it started")
            return self._server.started

        await eventually(started, timeout_s=START_TIMEOUT_S, message=f"uvicorn on port {self.port} did not start")

    async def aclose(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await asyncio.wait_for(self._task, START_TIMEOUT_S)

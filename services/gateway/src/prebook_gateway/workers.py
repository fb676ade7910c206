"""Several gateway processes on one port, each with a listening socket of its own.

uvicorn's own ``workers`` option shares one listening socket among the workers. A
load generator's 32 keep-alive connections, opened together, all went to the worker
that woke first, so the other one stayed idle (seen with ``ss -tnp`` during
``bench/callback_throughput.py`` on Linux 6.18). Here every worker binds its own
socket with ``SO_REUSEPORT``, and the kernel spreads new connections over the
sockets by a hash of their addresses.

The supervisor keeps one socket bound to the port (not listening), so that a port in
use fails at start. SIGTERM or SIGINT makes it send SIGTERM to every worker, which
finishes the requests it is handling, and SIGKILL to any worker still running after
``STOP_TIMEOUT_S``. A worker that exits on its own stops the others too, and the
supervisor exits with status 1, so that the service manager (Docker, systemd or
``prebook up``) detects the failure and can restart the gateway.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
from multiprocessing.process import BaseProcess

import uvicorn

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
WAIT_INTERVAL_S = 0.5


def run_workers(app: str, host: str, port: int, count: int, **uvicorn_options) -> int:
    """Serve the app factory ``app`` (an import string) from ``count`` worker processes until SIGTERM or SIGINT.

    Returns the exit status: 0 after a signal, 1 when the port is taken or a worker exited on its own.
    """
    try:
        reservation = bind_socket(host, port)
    except OSError as exc:
        logger.error("gateway cannot listen on %s:%d: %s; stop the program on that port or set PREBOOK_GATEWAY_PORT", host, port, exc)
        return 1

    stop_signals: list[int] = []
    previous_handlers = {
        signum: signal.signal(signum, lambda signum, _frame: stop_signals.append(signum))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    context = multiprocessing.get_context("spawn")
    workers = [_start_worker(context, app, host, port, uvicorn_options) for _ in range(count)]
    failed = None
    try:
        while not stop_signals and failed is None:
            multiprocessing.connection.wait([worker.sentinel for worker in workers], timeout=WAIT_INTERVAL_S)
            failed = next((worker for worker in workers if not worker.is_alive()), None)

        if failed is not None:
            logger.error("gateway worker %d exited on its own with status %s; stopping the others", failed.pid, failed.exitcode)
        else:
            logger.info("gateway stopping its %d workers on %s", count, signal.Signals(stop_signals[0]).name)
    finally:
        _stop(workers)
        reservation.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    return 1 if failed is not None else 0


def bind_socket(host: str, port: int) -> socket.socket:
    """Return a TCP socket bound to ``host:port`` with SO_REUSEPORT, so that each worker can bind one too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _start_worker(context, app: str, host: str, port: int, uvicorn_options: dict) -> BaseProcess:
    worker = context.Process(target=_serve, args=(app, host, port, uvicorn_options), name="gateway-worker")
    worker.start()
    return worker


def _serve(app: str, host: str, port: int, uvicorn_options: dict) -> None:
    """Run one worker: uvicorn on a listening socket of its own (in the worker process)."""
    sock = bind_socket(host, port)
    config = uvicorn.Config(app, factory=True, host=host, port=port, **uvicorn_options)
    uvicorn.Server(config).run(sockets=[sock])


def _stop(workers: list[BaseProcess]) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(STOP_TIMEOUT_S)
        if worker.is_alive():
            logger.warning("gateway worker %d still running %.0f s after SIGTERM; sending SIGKILL", worker.pid, STOP_TIMEOUT_S)
            worker.kill()
            worker.join()

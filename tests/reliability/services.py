"""A Prebook deployment on real processes for the reliability tests.

The simulator, the gateway and any number of executors run as child processes, on a
NATS server and a database that the test chooses (the shared ones, or its own that it
stops and restarts). Helpers read what each component recorded: the simulator's
requests, the stream's messages by subject, the prebooking rows and the service logs.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

import httpx
import nats

from prebook_common.models import FINAL_STATUSES, Prebooking
from support.jetstream import NatsNames
from support.polling import eventually
from support.ports import free_port
from support.processes import ServiceProcess, ServiceProcesses
from support.stack import CURRENT_KEY, ENCRYPTION_KEY, NEXT_KEY, PREBOOK, TOKEN_SECRET, Stack, now_ms

ADMIN_KEY = "reliability-admin-key-0123456789abcdef0123"
START_TIMEOUT_S = 30.0
FINAL_TIMEOUT_S = 40.0
CLASS_DAY = date.today() + timedelta(days=4)


@dataclass
class Deployment:
    """The running processes, how to reach them, and what they recorded."""

    stack: Stack
    processes: ServiceProcesses
    env: dict[str, str]
    nats_url: str
    names: NatsNames
    sim: ServiceProcess
    gateway: ServiceProcess
    executors: list[ServiceProcess] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    async def start_executor(self) -> ServiceProcess:
        """Start one more executor on the same durable consumer and wait until it consumes."""
        executor = self.processes.start(f"executor-{len(self.executors) + 1}", [*PREBOOK, "executor"], env=self.env)
        self.executors.append(executor)
        await asyncio.to_thread(executor.wait_for_log, "executor started", START_TIMEOUT_S)
        return executor

    async def restart_gateway(self, *, kill: bool) -> None:
        """Stop the gateway (SIGKILL with ``kill``, else SIGTERM), start it again and wait until it is ready."""
        if kill:
            await asyncio.to_thread(self.gateway.kill)
        else:
            await asyncio.to_thread(self.gateway.stop)
        self.gateway.start()
        await asyncio.to_thread(self.gateway.wait_for_http, f"{self.gateway_url}/readyz", START_TIMEOUT_S)

    async def open_class(self, class_id: int, opens_at_ms: int, capacity: int = 10) -> None:
        async with httpx.AsyncClient(base_url=self.stack.sim_url, trust_env=False) as sim:
            response = await sim.post(
                "/_sim/classes",
                json={"id": class_id, "day": CLASS_DAY.strftime("%Y%m%d"), "capacity": capacity, "opens_at_ms": opens_at_ms},
            )
            response.raise_for_status()

    async def prebook(self, class_id: int, execute_at_ms: int, user: str | None = None) -> uuid.UUID:
        """Store a scheduled prebooking for a new user with a live AimHarder session."""
        user = user or f"user-{uuid.uuid4().hex[:10]}@example.com"
        return await self.stack.create_prebooking(
            user=user, class_id=str(class_id), class_day=CLASS_DAY, execute_at_ms=execute_at_ms
        )

    async def send_callback(self, client: httpx.AsyncClient, prebooking_id: uuid.UUID, execute_at_ms: int) -> httpx.Response:
        body, headers = self.stack.callback(prebooking_id, execute_at_ms)
        return await client.post("/v1/qstash/prepare", content=body, headers=headers)

    def gateway_client(self, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gateway_url, trust_env=False, **kwargs)

    async def create_user_key(self, email: str) -> str:
        """Create the user with the admin key and return a new API key of that user."""
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with self.gateway_client() as gateway:
            created = await gateway.post("/v1/users", json={"email": email}, headers=admin)
            assert created.status_code in (201, 409), created.text
            issued = await gateway.post(f"/v1/users/{email}/keys", json={}, headers=admin)
            assert issued.status_code == 201, issued.text
        return issued.json()["key"]

    async def book_requests(self) -> list[dict]:
        """The /api/book requests the simulator received, in arrival order."""
        async with httpx.AsyncClient(base_url=self.stack.sim_url, trust_env=False) as sim:
            response = await sim.get("/_sim/requests", params={"path": "/api/book"})
            response.raise_for_status()
            return response.json()["requests"]

    async def final_prebooking(self, prebooking_id: uuid.UUID, timeout_s: float = FINAL_TIMEOUT_S) -> Prebooking:
        async def finished() -> Prebooking | None:
            row = await self.stack.get_prebooking(prebooking_id)
            return row if row is not None and row.status in FINAL_STATUSES else None

        return await eventually(finished, timeout_s=timeout_s, message=f"prebooking {prebooking_id} never reached a final status")

    async def subject_counts(self) -> dict[str, int]:
        """Messages in this test's stream by event name (``prepare``, ``completed``, ...)."""
        return await subject_counts(self.nats_url, self.names)

    async def wait_parked(self, prebooking_id: uuid.UUID, timeout_s: float = 15.0) -> ServiceProcess:
        """Return the executor that parked the prebooking, once one of them logged it."""
        line = f"prebooking {prebooking_id} parked"

        def holder() -> ServiceProcess | None:
            return next((executor for executor in self.executors if line in executor.logs_since_start()), None)

        return await eventually(holder, timeout_s=timeout_s, message=f"no executor parked prebooking {prebooking_id}")


async def subject_counts(nats_url: str, names: NatsNames) -> dict[str, int]:
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        info = await client.jetstream(timeout=5).stream_info(names.stream, subjects_filter=names.subjects)
    finally:
        await client.close()
    prefix = f"{names.subject_prefix}."
    return {subject.removeprefix(prefix): count for subject, count in (info.state.subjects or {}).items()}


async def start_deployment(
    processes: ServiceProcesses,
    base_env: dict[str, str],
    *,
    nats_url: str,
    database_url: str,
    names: NatsNames,
    executors: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Deployment:
    """Start the simulator, the gateway and ``executors`` executors, and wait until all serve."""
    sim_port = free_port()
    gateway_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    env = {
        **base_env,
        "PREBOOK_NATS_URL": nats_url,
        "PREBOOK_DATABASE_URL": database_url,
        "PREBOOK_TOKEN_SECRET": TOKEN_SECRET,
        "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
        "PREBOOK_QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
        "PREBOOK_SESSION_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "PREBOOK_GATEWAY_PORT": str(gateway_port),
        "PREBOOK_PUBLIC_URL": gateway_url,
        "PREBOOK_AIMHARDER_BASE_URL": sim_url,
        # Logins and session refreshes go to the simulator too, never to aimharder.com.
        "PREBOOK_AIMHARDER_LOGIN_URL": sim_url,
        "PREBOOK_ADMIN_API_KEY": ADMIN_KEY,
        **(extra_env or {}),
    }
    sim = processes.start("sim", [*PREBOOK, "sim", "--port", str(sim_port)], env=env)
    # The gateway migrates the database, so the executors start on a ready schema.
    gateway = processes.start("gateway", [*PREBOOK, "gateway"], env=env)
    await asyncio.to_thread(sim.wait_for_http, f"{sim_url}/_sim/config", START_TIMEOUT_S)
    await asyncio.to_thread(gateway.wait_for_http, f"{gateway_url}/readyz", START_TIMEOUT_S)

    stack = Stack(gateway_url=gateway_url, sim_url=sim_url, database_url=database_url, callback_url=f"{gateway_url}/v1/qstash/prepare")
    deployment = Deployment(stack=stack, processes=processes, env=env, nats_url=nats_url, names=names, sim=sim, gateway=gateway)
    for _ in range(executors):
        await deployment.start_executor()
    return deployment


async def sleep_until_ms(epoch_ms: int) -> None:
    """Sleep until the wall clock reaches ``epoch_ms``."""
    await asyncio.sleep(max(epoch_ms - now_ms(), 0) / 1000)


def lateness_ms(request: dict, execute_at_ms: int) -> float:
    """Time from the target to the request's arrival at the simulator, in ms."""
    return (request["arrival_ns"] - execute_at_ms * 1_000_000) / 1e6


def executor_id_of(executor: ServiceProcess) -> str:
    """The executor id (``claimed_by``) that the executor logged at start-up."""
    match = executor.wait_for_log(r"with executor id (\S+) \(", 1.0)
    return match[1]

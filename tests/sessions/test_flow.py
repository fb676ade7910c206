"""Sessions on the fire path, with the simulator, gateway and executor as real processes.

Each test logs in to the simulator as the user, stores the session the way the login
route does, makes the session stale, expired or revoked, sends the signed callback and
checks the prebooking's outcome. Every test ends by searching the process logs and the
test's own log capture for the cookies, tokens and password involved.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import update

from prebook_common.aimharder_login import AimharderAuth
from prebook_common.aimharder_sessions import Credentials, SessionRepository, SessionState, session_state
from prebook_common.crypto import SecretBox
from prebook_common.db import create_engine, session_factory
from prebook_common.migrate import upgrade
from prebook_common.models import FINAL_STATUSES, AimharderSession, Prebooking, PrebookingStatus, ms_to_datetime, utcnow
from sessions.conftest import AIMHARDER_USERNAME, PASSWORD, assert_no_secret, capture_prebook_logs, recorded, sim_secrets
from support.polling import eventually
from support.ports import free_port
from support.processes import ServiceProcesses
from support.stack import BOX, BOX_ID, CURRENT_KEY, ENCRYPTION_KEY, NEXT_KEY, PREBOOK, TOKEN_SECRET, Stack, now_ms

USER = "carla@example.com"
FINGERPRINT = "fingerprint-flow-1"
LEAD_MS = 3000


@dataclass
class SessionStack:
    stack: Stack
    sim: httpx.AsyncClient
    repository: SessionRepository
    engine: object
    processes: ServiceProcesses

    async def log_in(self, *, remember: bool) -> dict[str, str]:
        """Log in to the simulator and store the session, as POST /v1/sessions/.../login does."""
        async with httpx.AsyncClient(trust_env=False) as http:
            grant = await AimharderAuth(self.stack.sim_url, http, timeout_s=5).login(AIMHARDER_USERNAME, PASSWORD, FINGERPRINT)
        credentials = Credentials(AIMHARDER_USERNAME, PASSWORD) if remember else None
        await self.repository.put(USER, cookies=grant.cookies, token=grant.token, fingerprint=FINGERPRINT, credentials=credentials)
        return grant.cookies

    async def age_session(self, seconds: float = 3600) -> None:
        async with session_factory(self.engine)() as session:
            await session.exec(
                update(AimharderSession)
                .where(AimharderSession.user_email == USER)
                .values(refreshed_at=utcnow() - timedelta(seconds=seconds))
            )
            await session.commit()

    async def expire_in_simulator(self, cookie: str, token: str) -> None:
        """Replace the simulator's session with the same cookie and token, expired a minute ago."""
        response = await self.sim.post(
            "/_sim/sessions",
            json={"user": AIMHARDER_USERNAME, "cookie": cookie, "token": token, "fingerprint": FINGERPRINT,
                  "expires_at_ms": now_ms() - 60_000},
        )
        assert response.status_code == 201, response.text

    async def revoke_in_simulator(self, cookie: str) -> None:
        response = await self.sim.delete(f"/_sim/sessions/{cookie}")
        assert response.status_code == 200, response.text

    async def book_class_at_opening(self, class_id: int) -> tuple[uuid.UUID, int]:
        """Create a class that opens in LEAD_MS and a prebooking for it; send its callback."""
        day = date.today() + timedelta(days=4)
        execute_at_ms = now_ms() + LEAD_MS
        response = await self.sim.post(
            "/_sim/classes",
            json={"id": class_id, "day": day.strftime("%Y%m%d"), "capacity": 10, "opens_at_ms": execute_at_ms},
        )
        assert response.status_code == 201, response.text

        async with session_factory(self.engine)() as session:
            prebooking = Prebooking(
                user_email=USER, box_subdomain=BOX, box_aimharder_id=BOX_ID, class_id=str(class_id), class_day=day,
                execute_at=ms_to_datetime(execute_at_ms), status=PrebookingStatus.SCHEDULED,
            )
            session.add(prebooking)
            await session.commit()
            prebooking_id = prebooking.id

        body, headers = self.stack.callback(prebooking_id, execute_at_ms)
        async with httpx.AsyncClient(base_url=self.stack.gateway_url, trust_env=False) as gateway:
            response = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)
        assert response.status_code == 202, response.text
        return prebooking_id, execute_at_ms

    async def final_prebooking(self, prebooking_id: uuid.UUID) -> Prebooking:
        async def finished() -> Prebooking | None:
            row = await self.stack.get_prebooking(prebooking_id)
            return row if row is not None and row.status in FINAL_STATUSES else None

        return await eventually(finished, timeout_s=30, message=f"prebooking {prebooking_id} never reached a final status")

    async def assert_no_secret_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        secrets = await sim_secrets(self.sim) | {PASSWORD}
        row = await self.repository.get(USER)
        if row is not None:
            stored = self.repository.decrypt(row)
            secrets |= set(stored.cookies.values()) | {stored.token or ""}
        texts = [(f"log of {process.name}", process.logs()) for process in self.processes]
        texts.append(("caplog", caplog.text))
        assert_no_secret(texts, secrets)


StackStarter = Callable[..., Awaitable[SessionStack]]


@pytest.fixture
async def start_stack(
    service_env: dict[str, str], service_processes: ServiceProcesses, database_url: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[StackStarter]:
    """Start the simulator, gateway and executor with extra settings; stop them after the test."""
    capture_prebook_logs(caplog)
    engine = create_engine(database_url)
    await upgrade(engine)
    clients: list[httpx.AsyncClient] = []

    async def start(**settings: str) -> SessionStack:
        sim_port = free_port()
        gateway_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        env = {
            **service_env,
            "PREBOOK_TOKEN_SECRET": TOKEN_SECRET,
            "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
            "PREBOOK_QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
            "PREBOOK_SESSION_ENCRYPTION_KEYS": ENCRYPTION_KEY,
            "PREBOOK_GATEWAY_PORT": str(gateway_port),
            "PREBOOK_PUBLIC_URL": gateway_url,
            "PREBOOK_AIMHARDER_BASE_URL": sim_url,
            "PREBOOK_AIMHARDER_LOGIN_URL": sim_url,
            "PREBOOK_SESSION_REFRESHER_ENABLED": "false",
            **settings,
        }
        sim_process = service_processes.start("sim", [*PREBOOK, "sim", "--port", str(sim_port)], env=env)
        gateway = service_processes.start("gateway", [*PREBOOK, "gateway"], env=env)
        executor = service_processes.start("executor", [*PREBOOK, "executor"], env=env)
        await asyncio.to_thread(sim_process.wait_for_http, f"{sim_url}/_sim/config", 20)
        await asyncio.to_thread(gateway.wait_for_http, f"{gateway_url}/readyz", 30)
        await asyncio.to_thread(executor.wait_for_log, "executor started", 30)

        sim = httpx.AsyncClient(base_url=sim_url, trust_env=False)
        clients.append(sim)
        response = await sim.post("/_sim/users", json={"username": AIMHARDER_USERNAME, "password": PASSWORD})
        assert response.status_code == 201, response.text
        stack = Stack(gateway_url=gateway_url, sim_url=sim_url, database_url=database_url, callback_url=f"{gateway_url}/v1/qstash/prepare")
        return SessionStack(stack, sim, SessionRepository(engine, SecretBox(ENCRYPTION_KEY)), engine, service_processes)

    yield start
    for client in clients:
        await client.aclose()
    await engine.dispose()


async def test_stale_session_refreshed_then_booked(start_stack: StackStarter, caplog: pytest.LogCaptureFixture) -> None:
    sessions = await start_stack()
    old = await sessions.log_in(remember=False)
    await sessions.age_session()

    prebooking_id, _ = await sessions.book_class_at_opening(8101)
    row = await sessions.final_prebooking(prebooking_id)
    stored = await sessions.repository.get(USER)
    books = await recorded(sessions.sim, "/api/book")

    assert row.status == PrebookingStatus.BOOKED
    assert len(await recorded(sessions.sim, "/api/tokenUpdate")) == 1
    assert len(books) == 1
    assert books[0]["cookies"]["amhrdrauth"] != old["amhrdrauth"]
    assert session_state(stored, max_age_s=600) is SessionState.VALID
    await sessions.assert_no_secret_logged(caplog)


async def test_expired_session_relogs_in_then_booked(start_stack: StackStarter, caplog: pytest.LogCaptureFixture) -> None:
    sessions = await start_stack()
    old = await sessions.log_in(remember=True)
    _, secrets = await sessions.repository.load(USER)
    await sessions.expire_in_simulator(old["amhrdrauth"], secrets.token)
    await sessions.age_session()

    prebooking_id, _ = await sessions.book_class_at_opening(8102)
    row = await sessions.final_prebooking(prebooking_id)
    token_updates = await recorded(sessions.sim, "/api/tokenUpdate")

    assert row.status == PrebookingStatus.BOOKED
    assert [entry["answer"] for entry in token_updates] == [{"logout": 1}]
    assert len(await recorded(sessions.sim, "/api/login")) == 2
    assert len(await recorded(sessions.sim, "/api/book")) == 1
    await sessions.assert_no_secret_logged(caplog)


async def test_revoked_session_relogs_in_at_fire(start_stack: StackStarter, caplog: pytest.LogCaptureFixture) -> None:
    sessions = await start_stack()
    old = await sessions.log_in(remember=True)
    await sessions.revoke_in_simulator(old["amhrdrauth"])

    prebooking_id, execute_at_ms = await sessions.book_class_at_opening(8103)
    row = await sessions.final_prebooking(prebooking_id)
    books = await recorded(sessions.sim, "/api/book")

    assert row.status == PrebookingStatus.BOOKED
    assert row.attempts == 2
    assert [entry["answer"].get("logout") for entry in books] == [1, None]
    assert books[0]["arrival_ns"] >= execute_at_ms * 1_000_000
    assert books[1]["answer"]["bookState"] == 1
    assert row.booking_id == books[1]["answer"]["id"]
    assert len(await recorded(sessions.sim, "/api/login")) == 2
    await sessions.assert_no_secret_logged(caplog)


async def test_revoked_without_credentials_auth_failed(start_stack: StackStarter, caplog: pytest.LogCaptureFixture) -> None:
    sessions = await start_stack()
    old = await sessions.log_in(remember=False)
    await sessions.revoke_in_simulator(old["amhrdrauth"])

    prebooking_id, _ = await sessions.book_class_at_opening(8104)
    row = await sessions.final_prebooking(prebooking_id)
    stored = await sessions.repository.get(USER)

    assert row.status == PrebookingStatus.FAILED
    assert row.error_code == "AUTH_FAILED"
    assert f"PUT /v1/sessions/{USER}" in row.error_message
    assert "no credentials are stored" in row.error_message
    assert len(await recorded(sessions.sim, "/api/book")) == 1
    assert len(await recorded(sessions.sim, "/api/login")) == 1
    assert session_state(stored, max_age_s=600) is SessionState.EXPIRED
    await sessions.assert_no_secret_logged(caplog)


async def test_expired_without_credentials_fails_early(start_stack: StackStarter, caplog: pytest.LogCaptureFixture) -> None:
    sessions = await start_stack()
    old = await sessions.log_in(remember=False)
    _, secrets = await sessions.repository.load(USER)
    await sessions.expire_in_simulator(old["amhrdrauth"], secrets.token)
    await sessions.age_session()

    prebooking_id, _ = await sessions.book_class_at_opening(8105)
    row = await sessions.final_prebooking(prebooking_id)

    assert row.status == PrebookingStatus.FAILED
    assert row.error_code == "SESSION_EXPIRED"
    assert f"PUT /v1/sessions/{USER}" in row.error_message
    assert f"POST /v1/sessions/{USER}/login" in row.error_message
    assert row.fired_at is None
    assert await recorded(sessions.sim, "/api/book") == []
    await sessions.assert_no_secret_logged(caplog)


async def test_missing_session_fails_early(start_stack: StackStarter) -> None:
    sessions = await start_stack()

    prebooking_id, _ = await sessions.book_class_at_opening(8106)
    row = await sessions.final_prebooking(prebooking_id)

    assert row.status == PrebookingStatus.FAILED
    assert row.error_code == "NO_SESSION"
    assert f"PUT /v1/sessions/{USER}" in row.error_message
    assert await recorded(sessions.sim, "/api/book") == []


async def test_refresher_renews_in_background(start_stack: StackStarter, caplog: pytest.LogCaptureFixture) -> None:
    sessions = await start_stack(
        PREBOOK_SESSION_REFRESHER_ENABLED="true",
        PREBOOK_SESSION_REFRESH_INTERVAL_S="1",
        PREBOOK_SESSION_REFRESH_POLL_S="0.2",
    )
    old = await sessions.log_in(remember=False)
    first = await sessions.repository.get(USER)

    async def refreshed() -> AimharderSession | None:
        row = await sessions.repository.get(USER)
        return row if row.refreshed_at > first.refreshed_at else None

    async def stored_cookie_works() -> bool:
        # The refresher renews the cookie every second, so a check may meet a cookie just replaced.
        _, current = await sessions.repository.load(USER)
        response = await sessions.sim.get(
            "/api/bookings", params={"day": "20261208"}, headers={"Cookie": f"amhrdrauth={current.session_cookie}"}
        )
        return response.json().get("logout") != 1

    await eventually(refreshed, timeout_s=20, message="the executor's refresher never refreshed the session")
    await eventually(stored_cookie_works, timeout_s=20, message="the refreshed cookie in the database never worked")
    _, current = await sessions.repository.load(USER)

    assert current.session_cookie != old["amhrdrauth"]
    assert len(await recorded(sessions.sim, "/api/tokenUpdate")) >= 1
    executor_log = next(process for process in sessions.processes if process.name == "executor").logs()
    assert "session refresher started" in executor_log
    assert f"session of {USER} renewed by token update" in executor_log
    await sessions.assert_no_secret_logged(caplog)

"""SessionKeeper against the simulator: token update, re-login, expiry and the per-user lock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from prebook_common.aimharder_login import AimharderAuth, LoginRejected
from prebook_common.aimharder_sessions import Credentials, SessionRepository, SessionState, session_state
from prebook_common.db import session_factory
from prebook_common.models import AimharderSession, utcnow
from prebook_common.settings import Settings
from prebook_executor.session_locks import SessionLocks
from prebook_executor.sessions import SessionKeeper, SessionUnavailable
from prebook_simulator import SimulatorServer
from sessions.conftest import (
    AIMHARDER_USERNAME,
    PASSWORD,
    USER,
    assert_no_secret,
    capture_prebook_logs,
    recorded,
    sim_secrets,
)
from support.polling import eventually

FINGERPRINT = "fingerprint-test-1"
DAY = "20261208"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def auth(simulator: SimulatorServer, http: httpx.AsyncClient) -> AimharderAuth:
    return AimharderAuth(simulator.url, http, timeout_s=5.0)


@pytest.fixture
def keeper(simulator: SimulatorServer, repository: SessionRepository, auth: AimharderAuth) -> SessionKeeper:
    settings = Settings(
        aimharder_login_url=simulator.url,
        session_refresh_interval_s=600,
        session_max_age_s=300,
        session_refresh_poll_s=60,
    )
    return SessionKeeper(settings, repository, auth, SessionLocks())


async def _log_in(repository: SessionRepository, auth: AimharderAuth, *, remember: bool) -> dict[str, str]:
    grant = await auth.login(AIMHARDER_USERNAME, PASSWORD, FINGERPRINT)
    credentials = Credentials(AIMHARDER_USERNAME, PASSWORD) if remember else None
    await repository.put(USER, cookies=grant.cookies, token=grant.token, fingerprint=FINGERPRINT, credentials=credentials)
    return grant.cookies


async def _age(engine, seconds: float) -> None:
    """Move the session's refreshed_at into the past, as if it had not been refreshed since."""
    async with session_factory(engine)() as session:
        await session.exec(
            update(AimharderSession).where(AimharderSession.user_email == USER).values(refreshed_at=utcnow() - timedelta(seconds=seconds))
        )
        await session.commit()


async def _cookie_works(sim: httpx.AsyncClient, cookie: str) -> bool:
    response = await sim.get("/api/bookings", params={"day": DAY}, headers={"Cookie": f"amhrdrauth={cookie}"})
    assert response.status_code == 200, response.text
    return response.json().get("logout") != 1


async def test_login_collects_cookies_and_token(sim, repository: SessionRepository, auth: AimharderAuth) -> None:
    cookies = await _log_in(repository, auth, remember=False)
    _, secrets = await repository.load(USER)

    assert set(cookies) == {"amhrdrauth", "AWSALB", "AWSALBCORS", "PHPSESSID"}
    assert secrets.cookies == cookies
    assert secrets.token
    assert await _cookie_works(sim, cookies["amhrdrauth"])


async def test_login_wrong_password_rejected(sim, auth: AimharderAuth) -> None:
    with pytest.raises(LoginRejected) as raised:
        await auth.login(AIMHARDER_USERNAME, "wrong-password-123", FINGERPRINT)

    assert raised.value.code == "ERROR_LOGIN_INCORRECTO"
    assert "wrong-password-123" not in str(raised.value)


async def test_refresh_due_renews_cookie(sim, engine, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    old = await _log_in(repository, auth, remember=False)
    await _age(engine, 3600)

    refreshed = await keeper.refresh_due()
    row, secrets = await repository.load(USER)

    assert refreshed == 1
    assert len(await recorded(sim, "/api/tokenUpdate")) == 1
    assert secrets.session_cookie != old["amhrdrauth"]
    assert secrets.cookies["PHPSESSID"] == old["PHPSESSID"]
    assert (utcnow() - row.refreshed_at).total_seconds() < 3600
    assert not await _cookie_works(sim, old["amhrdrauth"])
    assert await _cookie_works(sim, secrets.session_cookie)


async def test_refresh_due_skips_fresh_session(sim, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    await _log_in(repository, auth, remember=False)

    assert await keeper.refresh_due() == 0
    assert await recorded(sim, "/api/tokenUpdate") == []


async def test_revoked_session_relogs_in(sim, engine, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    old = await _log_in(repository, auth, remember=True)
    response = await sim.delete(f"/_sim/sessions/{old['amhrdrauth']}")
    assert response.status_code == 200
    await _age(engine, 3600)

    refreshed = await keeper.refresh_due()
    row, secrets = await repository.load(USER)

    assert refreshed == 1
    assert len(await recorded(sim, "/api/login")) == 2
    assert row.refresh_failures == 0
    assert await _cookie_works(sim, secrets.session_cookie)


async def test_revoked_without_credentials_expires(
    sim, engine, repository: SessionRepository, auth, keeper: SessionKeeper, caplog: pytest.LogCaptureFixture
) -> None:
    capture_prebook_logs(caplog)
    old = await _log_in(repository, auth, remember=False)
    await sim.delete(f"/_sim/sessions/{old['amhrdrauth']}")
    await _age(engine, 3600)

    refreshed = await keeper.refresh_due()
    row = await repository.get(USER)

    assert refreshed == 0
    assert row.refresh_failures == 1
    assert "logout" in row.last_error
    assert session_state(row, max_age_s=300) is SessionState.EXPIRED
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any("refresh of the session of ana@example.com failed" in record.getMessage() for record in warnings)
    assert_no_secret([("caplog", caplog.text)], await sim_secrets(sim) | {PASSWORD})


async def test_expired_without_credentials_not_due(sim, engine, repository: SessionRepository, auth, keeper) -> None:
    old = await _log_in(repository, auth, remember=False)
    await sim.delete(f"/_sim/sessions/{old['amhrdrauth']}")
    await _age(engine, 3600)
    await keeper.refresh_due()

    await keeper.refresh_due()

    assert len(await recorded(sim, "/api/tokenUpdate")) == 1


async def test_failed_refresh_backs_off(sim, engine, repository: SessionRepository, http, keeper_settings_timeout) -> None:
    keeper, auth = keeper_settings_timeout
    await _log_in(repository, auth, remember=False)
    await _age(engine, 3600)
    await sim.put("/_sim/config", json={"delay_ms": 1500})

    await keeper.refresh_due()
    row = await repository.get(USER)
    await keeper.refresh_due()

    assert row.refresh_failures == 1
    assert "did not respond" in row.last_error
    assert session_state(row, max_age_s=300) is SessionState.STALE
    assert len(await recorded(sim, "/api/tokenUpdate")) == 1


@pytest.fixture
def keeper_settings_timeout(simulator: SimulatorServer, repository: SessionRepository, http) -> tuple[SessionKeeper, AimharderAuth]:
    """A keeper whose AimHarder calls time out after 0.5 s, and its client."""
    auth = AimharderAuth(simulator.url, http, timeout_s=0.5)
    settings = Settings(aimharder_login_url=simulator.url, session_refresh_interval_s=600, session_refresh_poll_s=60)
    return SessionKeeper(settings, repository, auth, SessionLocks()), auth


async def test_booking_refreshes_stale_session(sim, engine, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    old = await _log_in(repository, auth, remember=False)
    await _age(engine, 3600)

    booking = await keeper.open_for_booking(USER, prebooking_id="p1", budget_s=5)
    await booking.aclose()

    assert booking.secrets.session_cookie != old["amhrdrauth"]
    assert await _cookie_works(sim, booking.secrets.session_cookie)


async def test_booking_expired_without_credentials_fails(sim, engine, repository: SessionRepository, auth, keeper) -> None:
    old = await _log_in(repository, auth, remember=False)
    await sim.delete(f"/_sim/sessions/{old['amhrdrauth']}")
    await _age(engine, 3600)

    with pytest.raises(SessionUnavailable) as raised:
        await keeper.open_for_booking(USER, prebooking_id="p1", budget_s=5)

    assert raised.value.error_code == "SESSION_EXPIRED"
    assert f"PUT /v1/sessions/{USER}" in str(raised.value)
    assert keeper.locks.bookings_in_flight(USER) == 0


async def test_booking_without_session_fails(keeper: SessionKeeper) -> None:
    with pytest.raises(SessionUnavailable) as raised:
        await keeper.open_for_booking(USER, prebooking_id="p1", budget_s=5)

    assert raised.value.error_code == "NO_SESSION"
    assert "/login" in str(raised.value)


async def test_refresh_waits_while_booking_holds(sim, engine, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    old = await _log_in(repository, auth, remember=False)
    booking = await keeper.open_for_booking(USER, prebooking_id="p1", budget_s=5)
    await _age(engine, 3600)

    during = await keeper.refresh_due()
    _, still = await repository.load(USER)
    await booking.aclose()
    after = await keeper.refresh_due()

    assert during == 0
    assert still.session_cookie == old["amhrdrauth"]
    assert after == 1


async def test_relogin_reused_by_second_booking(sim, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    old = await _log_in(repository, auth, remember=True)
    first = await keeper.open_for_booking(USER, prebooking_id="p1", budget_s=5)
    second = await keeper.open_for_booking(USER, prebooking_id="p2", budget_s=5)
    await sim.delete(f"/_sim/sessions/{old['amhrdrauth']}")

    renewed_first = await keeper.relogin_after_logout(first.secrets, prebooking_id="p1")
    renewed_second = await keeper.relogin_after_logout(second.secrets, prebooking_id="p2")
    await first.aclose()
    await second.aclose()

    assert renewed_first is not None
    assert renewed_second is not None
    assert renewed_first.session_cookie == renewed_second.session_cookie
    assert len(await recorded(sim, "/api/login")) == 2
    assert await _cookie_works(sim, renewed_first.session_cookie)


async def test_relogin_without_credentials_expires(sim, repository: SessionRepository, auth, keeper: SessionKeeper) -> None:
    await _log_in(repository, auth, remember=False)
    booking = await keeper.open_for_booking(USER, prebooking_id="p1", budget_s=5)

    renewed = await keeper.relogin_after_logout(booking.secrets, prebooking_id="p1")
    await booking.aclose()
    row = await repository.get(USER)

    assert renewed is None
    assert session_state(row, max_age_s=300) is SessionState.EXPIRED
    assert len(await recorded(sim, "/api/login")) == 1


async def _yield_to_loop(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_lock_refresh_waits_for_booking() -> None:
    locks = SessionLocks()
    entered = asyncio.Event()

    async def refresh() -> None:
        async with locks.exclusive(USER, wait_for_bookings=True):
            entered.set()

    async with locks.booking(USER):
        task = asyncio.create_task(refresh())
        await _yield_to_loop()
        assert not entered.is_set()
    await eventually(entered.is_set, timeout_s=5, message="refresh never entered after the booking ended")
    await task


async def test_lock_booking_waits_for_refresh() -> None:
    locks = SessionLocks()
    entered = asyncio.Event()

    async def booking() -> None:
        async with locks.booking(USER):
            entered.set()

    async with locks.exclusive(USER, wait_for_bookings=True):
        task = asyncio.create_task(booking())
        await _yield_to_loop()
        assert not entered.is_set()
    await eventually(entered.is_set, timeout_s=5, message="booking never entered after the refresh ended")
    await task


async def test_lock_relogin_ignores_bookings() -> None:
    locks = SessionLocks()

    async with locks.booking(USER):
        async with asyncio.timeout(5):
            async with locks.exclusive(USER, wait_for_bookings=False):
                assert locks.refreshing(USER)

    assert not locks.refreshing(USER)
    assert locks.bookings_in_flight(USER) == 0


async def test_lock_users_are_independent() -> None:
    locks = SessionLocks()

    async with locks.booking(USER):
        async with asyncio.timeout(5):
            async with locks.exclusive("bea@example.com", wait_for_bookings=True):
                assert locks.bookings_in_flight("bea@example.com") == 0

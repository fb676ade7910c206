"""Fixtures for the AimHarder session tests: the simulator, keys and secret-leak checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from prebook_common.aimharder_sessions import SessionRepository
from prebook_common.crypto import SecretBox
from prebook_common.db import create_engine
from prebook_common.log import QUIET_LOGGERS
from prebook_common.migrate import upgrade
from prebook_simulator import SimulatorServer

USER = "ana@example.com"
AIMHARDER_USERNAME = "ana.aimharder@example.com"
PASSWORD = "contraseña-Ñu-7731-secret"


@pytest.fixture
def encryption_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
async def engine(database_url: str):
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def repository(engine, encryption_key: str) -> SessionRepository:
    return SessionRepository(engine, SecretBox(encryption_key))


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def sim(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """Client of the in-process simulator, with the test user registered for login."""
    async with httpx.AsyncClient(base_url=simulator.url, trust_env=False) as client:
        response = await client.post("/_sim/users", json={"username": AIMHARDER_USERNAME, "password": PASSWORD})
        assert response.status_code == 201, response.text
        yield client


async def raw_session_row(engine, user_email: str) -> str:
    """Every column of the user's ``aimharder_session`` row as stored, joined into one string."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT * FROM aimharder_session WHERE user_email = :email"), {"email": user_email}
        )
        row = result.one()
    return " | ".join(str(value) for value in row)


async def recorded(sim: httpx.AsyncClient, path: str | None) -> list[dict]:
    response = await sim.get("/_sim/requests", params={"path": path} if path else {})
    assert response.status_code == 200, response.text
    return response.json()["requests"]


async def sim_secrets(sim: httpx.AsyncClient) -> set[str]:
    """Every cookie value and token that crossed the simulator, as far as its log shows."""
    found: set[str] = set()
    for entry in await recorded(sim, None):
        found.update(value for value in (entry.get("cookies") or {}).values() if value)
        for source in (entry.get("json"), entry.get("form"), entry.get("answer")):
            if isinstance(source, dict):
                found.update(str(source[name]) for name in ("token", "password") if source.get(name))
    return found


def capture_prebook_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture Prebook's loggers at DEBUG and the rest at INFO, as the services configure them.

    httpcore's DEBUG lines contain raw response headers, Set-Cookie included, which is
    why prebook_common.log keeps httpx and httpcore at WARNING in the services.
    """
    # Each set_level also sets the capture handler's level, so the lowest level comes last.
    # The test's own control calls name cookies in their URLs, so these loggers stay quiet too.
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.WARNING, logger=name)
    caplog.set_level(logging.INFO)
    for name in ("prebook_common", "prebook_executor", "prebook_gateway"):
        caplog.set_level(logging.DEBUG, logger=name)


def assert_no_secret(texts: Iterable[tuple[str, str]], secrets: Iterable[str]) -> None:
    """Fail naming the source, never the secret, of the first secret found in ``texts``."""
    secrets = [secret for secret in secrets if len(secret) >= 8]
    assert secrets, "the leak check needs at least one secret to look for"
    for source, content in texts:
        for index, secret in enumerate(secrets):
            # pytest.fail rather than assert, because assert rewriting would print the secret.
            if secret in content:
                pytest.fail(f"secret #{index} ({len(secret)} characters) appears in {source}")

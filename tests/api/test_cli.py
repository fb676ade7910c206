"""The ``prebook`` client commands against a gateway running as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.conftest import ADMIN_KEY, bearer
from prebook_common.crypto import SecretBox
from prebook_common.db import engine_scope, session_factory
from prebook_common.models import AimharderSession
from prebook_gateway.keys import KEY_PATTERN, find_key, hash_key
from prebook_simulator import SimulatorServer
from support.jetstream import NatsNames
from support.ports import free_port
from support.processes import ServiceProcess, ServiceProcesses
from support.stack import ENCRYPTION_KEY

PREBOOK = [sys.executable, "-m", "prebook.cli"]
COMMAND_TIMEOUT_S = 60
USER = "ana@example.com"
BOX = "crossfitsol"


@dataclass
class CliGateway:
    url: str
    database_url: str
    process: ServiceProcess
    home: Path

    def env(self, **variables: str | None) -> dict[str, str]:
        """Environment of a `prebook` run: a private HOME, wide tables, English unless set."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
            "PREBOOK_API_URL": self.url,
            "PREBOOK_DATABASE_URL": self.database_url,
        }
        for name, value in variables.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env


async def run_prebook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `prebook ARGS` in a thread, so the test's event loop keeps serving the simulator."""
    return await asyncio.to_thread(
        subprocess.run,
        [*PREBOOK, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


async def start_cli_gateway(
    processes: ServiceProcesses, tmp_path: Path, nats_url: str, names: NatsNames, database_url: str, aimharder_url: str
) -> CliGateway:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PREBOOK_ENV": "development",
        "PREBOOK_NATS_URL": nats_url,
        "PREBOOK_NATS_STREAM": names.stream,
        "PREBOOK_NATS_SUBJECT_PREFIX": names.subject_prefix,
        "PREBOOK_DATABASE_URL": database_url,
        "PREBOOK_GATEWAY_PORT": str(port),
        "PREBOOK_ADMIN_API_KEY": ADMIN_KEY,
        "PREBOOK_SESSION_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "PREBOOK_AIMHARDER_BASE_URL": aimharder_url,
        "PREBOOK_LOG_LEVEL": "DEBUG",
        "PYTHONUNBUFFERED": "1",
    }
    process = processes.start("gateway", [*PREBOOK, "gateway"], env=env, cwd=tmp_path)
    await asyncio.to_thread(process.wait_for_http, f"{url}/readyz", 30)
    home = tmp_path / "home"
    home.mkdir()
    return CliGateway(url=url, database_url=database_url, process=process, home=home)


@pytest.fixture
async def simulator():
    async with SimulatorServer("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def cli_gateway(
    service_processes: ServiceProcesses,
    tmp_path: Path,
    nats_url: str,
    nats_names: NatsNames,
    sqlite_url: str,
    simulator: SimulatorServer,
) -> CliGateway:
    """A gateway process on SQLite: the client commands do not depend on the backend."""
    gateway = await start_cli_gateway(service_processes, tmp_path, nats_url, nats_names, sqlite_url, simulator.url)
    async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as client:
        response = await client.put(
            f"/v1/boxes/{BOX}",
            json={"aimharder_id": "4242", "timezone": "Europe/Madrid", "window_days": 4},
            headers=bearer(ADMIN_KEY),
        )
        assert response.status_code == 201, response.text
    return gateway


async def create_key(gateway: CliGateway) -> str:
    result = await run_prebook(gateway.env(), "keys", "create", "--user", USER, "--name", "cli-test")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_keys_create_prints_key_once(cli_gateway: CliGateway) -> None:
    result = await run_prebook(cli_gateway.env(), "keys", "create", "--user", "Ana@Example.com")

    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert KEY_PATTERN.fullmatch(key)
    assert "created user ana@example.com" in result.stderr
    assert key not in result.stderr

    again = await run_prebook(cli_gateway.env(), "keys", "create", "--user", "ana@example.com")
    assert "created user" not in again.stderr
    assert again.stdout.strip() != key

    listed = await run_prebook(cli_gateway.env(), "keys", "list", "--user", "ana@example.com")
    assert listed.returncode == 0
    assert len(listed.stdout.strip().splitlines()) == 2
    assert key not in listed.stdout

    async with httpx.AsyncClient(base_url=cli_gateway.url, trust_env=False) as client:
        me = await client.get("/v1/me", headers=bearer(key))
    assert me.json()["user_email"] == "ana@example.com"


async def test_keys_create_on_each_backend(database_url: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PREBOOK_DATABASE_URL": database_url}

    result = await run_prebook(env, "keys", "create", "--user", USER)

    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    async with engine_scope(database_url) as engine:
        async with session_factory(engine)() as session:
            stored = await find_key(session, key)
    assert stored is not None
    assert stored.user_email == USER
    assert stored.key_hash == hash_key(key)


async def test_keys_revoke(cli_gateway: CliGateway) -> None:
    key = await create_key(cli_gateway)
    async with httpx.AsyncClient(base_url=cli_gateway.url, trust_env=False) as client:
        key_id = (await client.get("/v1/me", headers=bearer(key))).json()["key"]["id"]

        revoked = await run_prebook(cli_gateway.env(), "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert key_id in revoked.stdout
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 401


async def test_prebook_add_list_show_cancel(cli_gateway: CliGateway) -> None:
    key = await create_key(cli_gateway)
    env = cli_gateway.env(PREBOOK_API_KEY=key)

    # A 09:00 class on 2030-05-20 with a 4-day window opens 2030-05-16 09:00 in Madrid.
    added = await run_prebook(env, "add", "--box", BOX, "--class-id", "7001", "--day", "2030-05-20", "--time", "09:00")
    assert added.returncode == 0, added.stderr
    assert "2030-05-16 09:00 CEST (Europe/Madrid)" in added.stdout

    as_json = await run_prebook(
        env, "add", "--box", BOX, "--class-id", "7002", "--day", "2030-05-21", "--time", "18:30", "--json"
    )
    assert as_json.returncode == 0, as_json.stderr
    second = json.loads(as_json.stdout)
    assert second["execute_at"] == "2030-05-17T16:30:00Z"
    assert second["status"] == "pending"

    # 1900864800123 ms is 2030-03-27 18:00:00.123 UTC, 19:00:00.123 in Madrid (CET).
    at_instant = await run_prebook(env, "add", "--box", BOX, "--class-id", "7003", "--day", "2030-03-31", "--at", "1900864800123")
    assert at_instant.returncode == 0, at_instant.stderr
    assert "2030-03-27 19:00:00.123 CET (Europe/Madrid)" in at_instant.stdout

    listed = await run_prebook(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert "2030-05-16 09:00 CEST" in listed.stdout
    assert "2030-05-17 18:30 CEST" in listed.stdout
    assert "2030-03-27 19:00:00.123 CET" in listed.stdout
    assert second["id"] in listed.stdout
    assert "3 of 3 prebookings" in listed.stdout

    page = json.loads((await run_prebook(env, "list", "--limit", "2", "--offset", "1", "--json")).stdout)
    assert page["total"] == 3
    assert [item["class_id"] for item in page["items"]] == ["7001", "7002"]

    shown = await run_prebook(env, "show", second["id"])
    assert shown.returncode == 0, shown.stderr
    assert "7002" in shown.stdout
    assert "2030-05-17 18:30 CEST (Europe/Madrid)" in shown.stdout

    cancelled = await run_prebook(env, "cancel", second["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Prebooking {second['id']} cancelled" in cancelled.stdout
    after = json.loads((await run_prebook(env, "show", second["id"], "--json")).stdout)
    assert after["status"] == "cancelled"

    again = await run_prebook(env, "cancel", second["id"])
    assert again.returncode == 1
    assert "HTTP 409" in again.stderr
    assert "is cancelled" in again.stderr

    duplicate = await run_prebook(env, "add", "--box", BOX, "--class-id", "7001", "--day", "2030-05-20", "--time", "09:00")
    assert duplicate.returncode == 1
    assert "HTTP 409" in duplicate.stderr


async def test_prebook_boxes(cli_gateway: CliGateway) -> None:
    env = cli_gateway.env(PREBOOK_API_KEY=await create_key(cli_gateway))

    table = await run_prebook(env, "boxes")
    assert table.returncode == 0, table.stderr
    assert BOX in table.stdout
    assert "Europe/Madrid" in table.stdout
    assert "4 days" in table.stdout

    listing = json.loads((await run_prebook(env, "boxes", "--json")).stdout)
    assert listing[0]["subdomain"] == BOX
    assert listing[0]["window_days"] == 4


async def test_prebook_book_now(cli_gateway: CliGateway, simulator: SimulatorServer) -> None:
    key = await create_key(cli_gateway)
    async with httpx.AsyncClient(base_url=simulator.url, trust_env=False) as sim:
        await sim.post("/_sim/classes", json={"id": 7001, "day": "20300520", "capacity": 5, "opens_at_ms": None})
        await sim.post("/_sim/sessions", json={"user": USER, "cookie": "cookie-ana", "expires_at_ms": None})
    async with engine_scope(cli_gateway.database_url) as engine:
        async with session_factory(engine)() as session:
            cookies = SecretBox(ENCRYPTION_KEY).encrypt_json({"amhrdrauth": "cookie-ana"})
            session.add(AimharderSession(user_email=USER, cookies_encrypted=cookies))
            await session.commit()

    booked = await run_prebook(
        cli_gateway.env(PREBOOK_API_KEY=key), "book", "--box", BOX, "--class-id", "7001", "--day", "2030-05-20"
    )

    assert booked.returncode == 0, booked.stderr
    assert "booked (bookState 1)" in booked.stdout


async def test_rejected_key_exits_2(cli_gateway: CliGateway) -> None:
    wrong = "pbk_" + "W" * 43
    result = await run_prebook(cli_gateway.env(PREBOOK_API_KEY=wrong), "list")

    assert result.returncode == 2
    assert "rejected the API key from PREBOOK_API_KEY" in result.stderr
    assert "prebook login" in result.stderr
    assert "W" * 8 not in cli_gateway.process.logs()
    assert "rejected: unknown API key" in cli_gateway.process.logs()


async def test_gateway_log_has_no_key(cli_gateway: CliGateway) -> None:
    key = await create_key(cli_gateway)
    env = cli_gateway.env(PREBOOK_API_KEY=key)
    assert (await run_prebook(env, "list")).returncode == 0
    assert (await run_prebook(env, "add", "--box", BOX, "--class-id", "1", "--day", "2030-05-20", "--time", "09:00")).returncode == 0

    logs = cli_gateway.process.logs()
    assert "prebooking" in logs
    assert key not in logs
    assert key[:12] not in logs
    assert ADMIN_KEY not in logs


async def test_login_writes_private_config(cli_gateway: CliGateway) -> None:
    key = await create_key(cli_gateway)
    env = cli_gateway.env(PREBOOK_API_URL=None)

    login = await run_prebook(env, "login", "--key", key, "--url", cli_gateway.url)

    assert login.returncode == 0, login.stderr
    config = cli_gateway.home / "config" / "prebook" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f'api_key = "{key}"' in config.read_text()
    assert f'api_url = "{cli_gateway.url}"' in config.read_text()
    assert "ana@example.com" in login.stdout

    listed = await run_prebook(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert "No prebookings." in listed.stdout

    wrong = await run_prebook(env, "login", "--key", "pbk_" + "Q" * 43, "--url", cli_gateway.url)
    assert wrong.returncode == 2
    assert f'api_key = "{key}"' in config.read_text()


async def test_spanish_locale(cli_gateway: CliGateway) -> None:
    env = cli_gateway.env(PREBOOK_API_KEY=await create_key(cli_gateway), LANG="es_ES.UTF-8")
    await run_prebook(env, "add", "--box", BOX, "--class-id", "1", "--day", "2030-05-20", "--time", "09:00")

    listed = await run_prebook(env, "list")

    assert listed.returncode == 0, listed.stderr
    assert "Estado" in listed.stdout
    assert "Abre (hora del box)" in listed.stdout
    assert "1 de 1 prerreservas" in listed.stdout


async def test_unreachable_gateway_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PREBOOK_API_URL": url,
        "PREBOOK_API_KEY": "pbk_" + "U" * 43,
    }
    result = await run_prebook(env, "list")

    assert result.returncode == 1
    assert f"cannot reach the gateway at {url}" in result.stderr
    assert "prebook gateway" in result.stderr


async def test_missing_key_exits_2(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = await run_prebook(env, "boxes")

    assert result.returncode == 2
    assert "no API key" in result.stderr
    assert "PREBOOK_API_KEY" in result.stderr
    assert str(tmp_path / "config" / "prebook" / "config.toml") in result.stderr

"""Fixtures that start Prebook's services as real processes."""

from __future__ import annotations

import asyncio

import pytest

from prebook_common.db import engine_scope
from prebook_common.migrate import upgrade
from support.ports import free_port
from support.processes import ServiceProcesses
from support.stack import CURRENT_KEY, ENCRYPTION_KEY, NEXT_KEY, PREBOOK, TOKEN_SECRET, Stack


@pytest.fixture
async def stack(service_env: dict[str, str], service_processes: ServiceProcesses, database_url: str) -> Stack:
    sim_port = free_port()
    gateway_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"

    async with engine_scope(database_url) as engine:
        await upgrade(engine)

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
    }
    sim = service_processes.start("sim", [*PREBOOK, "sim", "--port", str(sim_port)], env=env)
    gateway = service_processes.start("gateway", [*PREBOOK, "gateway"], env=env)
    executor = service_processes.start("executor", [*PREBOOK, "executor"], env=env)

    await asyncio.to_thread(sim.wait_for_http, f"{sim_url}/_sim/config", 20)
    await asyncio.to_thread(gateway.wait_for_http, f"{gateway_url}/readyz", 30)
    await asyncio.to_thread(executor.wait_for_log, "executor started", 30)
    return Stack(gateway_url=gateway_url, sim_url=sim_url, database_url=database_url, callback_url=f"{gateway_url}/v1/qstash/prepare")

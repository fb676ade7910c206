"""Fixtures for the reliability tests: whole deployments on real processes.

Each test runs on Postgres when the test run has one, otherwise on a SQLite file,
because several of them run two executors and the production database is Postgres.
Tests that stop NATS or the database start their own servers for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from reliability.services import Deployment, start_deployment
from support.jetstream import NatsNames
from support.processes import ServiceProcesses

DeploymentFactory = Callable[..., Awaitable[Deployment]]


@pytest.fixture
def database_url(request: pytest.FixtureRequest, postgres_server_url: str | None, tmp_path: Path) -> str:
    """A fresh Postgres database when the run has a Postgres server, else a SQLite file."""
    if postgres_server_url is None:
        return f"sqlite+aiosqlite:///{tmp_path / 'prebook.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def start(
    service_env: dict[str, str],
    service_processes: ServiceProcesses,
    nats_url: str,
    database_url: str,
    nats_names: NatsNames,
) -> DeploymentFactory:
    """Start a deployment; keyword arguments override NATS, the database, executors and settings."""

    async def start_one(**overrides) -> Deployment:
        options = {"nats_url": nats_url, "database_url": database_url, "names": nats_names, **overrides}
        return await start_deployment(service_processes, service_env, **options)

    return start_one


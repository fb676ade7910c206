"""Fixtures shared by Prebook's cross-service tests.

Servers come from the environment, from testcontainers or from this machine, in that
order (support/servers.py describes each step). Each test gets its own database,
JetStream stream and subject prefix, so tests never see each other's rows or messages.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from support.databases import fresh_database
from support.jetstream import NatsNames, delete_stream, new_nats_names
from support.processes import ServiceProcesses
from support.servers import NATS_URL_VARIABLE, POSTGRES_URL_VARIABLE, nats_server, postgres_server

_SERVICE_PROCESSES = pytest.StashKey[ServiceProcesses]()

# Variables a service process inherits from the test run. Everything else in its
# environment comes from the service_env fixture.
_INHERITED_VARIABLES = ("PATH", "HOME")


def pytest_report_header(config: pytest.Config) -> list[str]:
    nats_url = os.environ.get(NATS_URL_VARIABLE)
    if nats_url:
        nats_line = f"NATS for tests: {nats_url} from {NATS_URL_VARIABLE}"
    else:
        nats_line = (
            f"NATS for tests: {NATS_URL_VARIABLE} is not set, so a container if a Docker "
            "engine responds, else a nats-server started by the tests"
        )

    postgres_url = os.environ.get(POSTGRES_URL_VARIABLE)
    if postgres_url:
        shown_url = make_url(postgres_url).render_as_string(hide_password=True)
        postgres_line = f"Postgres for tests: {shown_url} from {POSTGRES_URL_VARIABLE}"
    else:
        postgres_line = (
            f"Postgres for tests: {POSTGRES_URL_VARIABLE} is not set, so a container if a "
            "Docker engine responds, else Postgres tests are skipped"
        )
    return [nats_line, postgres_line]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the test's service processes to the report of a failed test."""
    report = yield
    processes = item.stash.get(_SERVICE_PROCESSES, None)
    if processes is not None and report.failed and report.when in ("setup", "call"):
        for process in processes:
            title = f"log of {process.name} ({process.log_path})"
            report.sections.append((title, process.log_tail()))
    return report


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a NATS server with JetStream, shared by the whole test session."""
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str | None]:
    """SQLAlchemy URL of a Postgres maintenance database, or None without Postgres."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a SQLite file in the test's own temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'prebook.db'}"


@pytest.fixture
async def postgres_url(postgres_server_url: str | None) -> AsyncIterator[str]:
    """SQLAlchemy URL of a new empty Postgres database, dropped after the test."""
    if postgres_server_url is None:
        pytest.skip(
            f"no Postgres server: set {POSTGRES_URL_VARIABLE} to an SQLAlchemy URL such as "
            "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres, or start a Docker engine"
        )
    async with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """SQLAlchemy URL of a fresh database, once per backend (test ids `sqlite`, `postgres`)."""
    # A plain fixture, because resolving the async postgres_url from inside an async
    # fixture would need the event loop that is already running it.
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def nats_names(nats_url: str) -> AsyncIterator[NatsNames]:
    """Stream name and subject prefix that no other test uses. The stream is deleted after."""
    names = new_nats_names()
    yield names
    await delete_stream(nats_url, names.stream)


@pytest.fixture
def service_env(nats_url: str, database_url: str, nats_names: NatsNames) -> dict[str, str]:
    """Environment for a service process that uses this test's NATS names and database."""
    env = {
        "PREBOOK_ENV": "development",
        "PREBOOK_NATS_URL": nats_url,
        "PREBOOK_DATABASE_URL": database_url,
        "PREBOOK_NATS_STREAM": nats_names.stream,
        "PREBOOK_NATS_SUBJECT_PREFIX": nats_names.subject_prefix,
        "PREBOOK_LOG_LEVEL": "DEBUG",
        # Log lines reach the file at once, so wait_for_log finds them without delay.
        "PYTHONUNBUFFERED": "1",
    }
    for name in _INHERITED_VARIABLES:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@pytest.fixture
def service_processes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ServiceProcesses]:
    """Starter of service processes. Stops them all after the test.

    When the test fails, the report ends with each process's log.
    """
    processes = ServiceProcesses(tmp_path / "logs")
    request.node.stash[_SERVICE_PROCESSES] = processes
    yield processes
    processes.stop_all()

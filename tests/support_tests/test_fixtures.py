"""Checks that the shared fixtures and helpers give each test real, isolated servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import nats
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import support.servers
from support.databases import DATABASE_NAME_PREFIX, create_database, drop_database, fresh_database
from support.databases import to_asyncpg_dsn
from support.jetstream import NatsNames, delete_stream, new_nats_names
from support.polling import eventually
from support.ports import free_port
from support.processes import ProcessExitedError, ServiceProcess, live_group_members
from support.servers import NATS_URL_VARIABLE, NatsServerProcess, nats_server

TESTS_DIR = Path(__file__).resolve().parents[1]


async def _database_exists(server_url: str, name: str) -> bool:
    connection = await asyncpg.connect(to_asyncpg_dsn(server_url), timeout=10)
    try:
        found = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await connection.close()
    return found == 1


def _require_postgres(postgres_server_url: str | None) -> str:
    if postgres_server_url is None:
        pytest.skip(f"no Postgres server: set {support.servers.POSTGRES_URL_VARIABLE}")
    return postgres_server_url


# --- NATS ------------------------------------------------------------------------------


async def test_jetstream_drops_duplicate_msg_id(nats_url: str, nats_names: NatsNames) -> None:
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        jetstream = client.jetstream(timeout=5)
        await jetstream.add_stream(name=nats_names.stream, subjects=[nats_names.subjects])
        subject = nats_names.subject("prepare")
        headers = {"Nats-Msg-Id": "prebooking-1:1700000000000"}

        first = await jetstream.publish(subject, b"first", headers=headers)
        second = await jetstream.publish(subject, b"second", headers=headers)
        info = await jetstream.stream_info(nats_names.stream)
    finally:
        await client.close()

    assert first.stream == nats_names.stream
    assert not first.duplicate
    assert second.duplicate is True
    assert info.state.messages == 1


def test_nats_names_differ_per_call() -> None:
    first = new_nats_names()
    second = new_nats_names()

    assert first.stream != second.stream
    assert first.subject_prefix != second.subject_prefix
    assert first.stream.startswith("PREBOOKINGS_T")
    assert first.subject_prefix.endswith(".prebooking")
    assert first.subject("created") == f"{first.subject_prefix}.created"


async def test_delete_stream_reports_missing(nats_url: str) -> None:
    names = new_nats_names()
    client = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        await client.jetstream(timeout=5).add_stream(name=names.stream, subjects=[names.subjects])
    finally:
        await client.close()

    assert await delete_stream(nats_url, names.stream) is True
    assert await delete_stream(nats_url, names.stream) is False


async def test_nats_server_process_restarts_with_data(tmp_path: Path) -> None:
    names = new_nats_names()
    server = NatsServerProcess(tmp_path / "store")
    server.start()
    try:
        port = server.port
        client = await nats.connect(server.url, connect_timeout=5, allow_reconnect=False)
        try:
            jetstream = client.jetstream(timeout=5)
            await jetstream.add_stream(name=names.stream, subjects=[names.subjects])
            await jetstream.publish(names.subject("created"), b"kept across restarts")
        finally:
            await client.close()

        await asyncio.to_thread(server.restart)

        assert server.port == port
        client = await nats.connect(server.url, connect_timeout=5, allow_reconnect=False)
        try:
            info = await client.jetstream(timeout=5).stream_info(names.stream)
        finally:
            await client.close()
        assert info.state.messages == 1
    finally:
        server.stop()

    assert not server.running
    assert "Server is ready" in server.logs()


async def test_nats_server_process_recovers_after_kill(tmp_path: Path) -> None:
    server = NatsServerProcess(tmp_path / "store")
    server.start()
    try:
        pid = server.pid
        server.kill()

        assert not server.running
        assert live_group_members(pid) == []

        await asyncio.to_thread(server.start)
        client = await nats.connect(server.url, connect_timeout=5, allow_reconnect=False)
        try:
            account = await client.jetstream(timeout=5).account_info()
        finally:
            await client.close()
        assert account is not None
    finally:
        server.stop()


def test_nats_server_prefers_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(NATS_URL_VARIABLE, "nats://127.0.0.1:4999")

    with nats_server(tmp_path) as url:
        assert url == "nats://127.0.0.1:4999"
    assert list(tmp_path.iterdir()) == []


async def test_nats_server_starts_own_without_docker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(NATS_URL_VARIABLE, raising=False)
    monkeypatch.setattr(support.servers, "docker_engine_available", lambda: False)

    with nats_server(tmp_path) as url:
        client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
        try:
            account = await client.jetstream(timeout=5).account_info()
        finally:
            await client.close()

    assert account is not None
    assert (tmp_path / "jetstream-store" / "jetstream").is_dir()


def test_docker_check_without_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'missing.sock'}")

    # __wrapped__ skips the session cache, so this call really checks the socket.
    assert support.servers.docker_engine_available.__wrapped__(timeout_s=1.0) is False


# --- databases -------------------------------------------------------------------------


async def test_database_url_accepts_queries(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO probe (id) VALUES (1)"))
            count = await connection.scalar(text("SELECT count(*) FROM probe"))
    finally:
        await engine.dispose()

    assert count == 1


def test_sqlite_url_is_in_tmp_path(sqlite_url: str, tmp_path: Path) -> None:
    url = make_url(sqlite_url)

    assert url.drivername == "sqlite+aiosqlite"
    assert Path(url.database).parent == tmp_path


async def test_postgres_url_is_empty(postgres_url: str) -> None:
    url = make_url(postgres_url)
    connection = await asyncpg.connect(to_asyncpg_dsn(url), timeout=10)
    try:
        current = await connection.fetchval("SELECT current_database()")
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await connection.close()

    assert url.drivername == "postgresql+asyncpg"
    assert current == url.database
    assert current.startswith(DATABASE_NAME_PREFIX)
    assert tables == 0


async def test_fresh_database_is_dropped_after(postgres_server_url: str | None) -> None:
    server_url = _require_postgres(postgres_server_url)

    async with fresh_database(server_url) as database_url:
        name = make_url(database_url).database
        assert await _database_exists(server_url, name)
        # An open connection must not keep the database from being dropped.
        leftover = await asyncpg.connect(to_asyncpg_dsn(database_url), timeout=10)

    try:
        assert not await _database_exists(server_url, name)
        assert leftover.is_closed() or not await _query_succeeds(leftover)
    finally:
        leftover.terminate()


async def _query_succeeds(connection: asyncpg.Connection) -> bool:
    try:
        await connection.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_fresh_databases_differ(postgres_server_url: str | None) -> None:
    server_url = _require_postgres(postgres_server_url)

    first = await create_database(server_url)
    try:
        second = await create_database(server_url)
        await drop_database(second, server_url)
    finally:
        await drop_database(first, server_url)

    assert make_url(first).database != make_url(second).database


async def test_drop_database_rejects_foreign_name(postgres_server_url: str | None) -> None:
    server_url = _require_postgres(postgres_server_url)

    with pytest.raises(ValueError, match="was not dropped"):
        await drop_database(str(make_url(server_url).set(database="postgres")), server_url)


# --- service environment ---------------------------------------------------------------


def test_service_env_names_test_resources(
    service_env: dict[str, str], nats_url: str, database_url: str, nats_names: NatsNames
) -> None:
    assert service_env["PREBOOK_ENV"] == "development"
    assert service_env["PREBOOK_NATS_URL"] == nats_url
    assert service_env["PREBOOK_DATABASE_URL"] == database_url
    assert service_env["PREBOOK_NATS_STREAM"] == nats_names.stream
    assert service_env["PREBOOK_NATS_SUBJECT_PREFIX"] == nats_names.subject_prefix
    assert service_env["PREBOOK_LOG_LEVEL"] == "DEBUG"
    assert service_env["PATH"] == os.environ["PATH"]


# --- processes -------------------------------------------------------------------------


def test_service_process_captures_both_streams(tmp_path: Path) -> None:
    process = ServiceProcess(
        "echoer",
        ["sh", "-c", "echo to-stdout; echo to-stderr >&2; sleep 300"],
        env=os.environ,
        log_path=tmp_path / "echoer.log",
    ).start()
    try:
        process.wait_for_log("to-stderr", 5)
        process.wait_for_log("to-stdout", 5)
    finally:
        process.stop()

    assert "to-stdout" in process.logs()
    assert "to-stderr" in process.logs()


def test_service_process_stop_leaves_no_child(tmp_path: Path) -> None:
    process = ServiceProcess(
        "sleepers",
        ["sh", "-c", "sleep 300 & echo started; sleep 300"],
        env=os.environ,
        log_path=tmp_path / "sleepers.log",
    ).start()
    pgid = process.pid
    try:
        process.wait_for_log("started", 5)
        assert len(live_group_members(pgid)) >= 2
    finally:
        process.stop(timeout_s=5)

    assert live_group_members(pgid) == []


def test_service_process_stop_kills_sigterm_ignorer(tmp_path: Path) -> None:
    # sh ignores SIGTERM and so does sleep, which inherits the ignored disposition.
    process = ServiceProcess(
        "stubborn",
        ["sh", "-c", "trap '' TERM; echo ready; sleep 300"],
        env=os.environ,
        log_path=tmp_path / "stubborn.log",
    ).start()
    pgid = process.pid
    process.wait_for_log("ready", 5)

    status = process.stop(timeout_s=0.5)

    assert status == -9
    assert live_group_members(pgid) == []


def test_wait_for_log_reports_early_exit(tmp_path: Path) -> None:
    process = ServiceProcess(
        "crasher",
        ["sh", "-c", "echo configuration invalid; exit 3"],
        env=os.environ,
        log_path=tmp_path / "crasher.log",
    ).start()

    with pytest.raises(ProcessExitedError) as caught:
        process.wait_for_log("never printed", 10)

    assert "exited with status 3" in str(caught.value)
    assert "configuration invalid" in str(caught.value)


def test_wait_for_log_times_out(tmp_path: Path) -> None:
    process = ServiceProcess(
        "silent", ["sleep", "300"], env=os.environ, log_path=tmp_path / "silent.log"
    ).start()
    try:
        with pytest.raises(TimeoutError, match="no log line matched 'never printed'"):
            process.wait_for_log("never printed", 0.3)
    finally:
        process.stop()


def test_wait_for_log_sees_only_latest_start(tmp_path: Path) -> None:
    process = ServiceProcess(
        "restarted",
        ["sh", "-c", "echo first run; sleep 300"],
        env=os.environ,
        log_path=tmp_path / "restarted.log",
    ).start()
    process.wait_for_log("first run", 5)
    process.stop()

    process.command = ["sh", "-c", "echo second run; sleep 300"]
    process.start()
    try:
        process.wait_for_log("second run", 5)
        with pytest.raises(TimeoutError):
            process.wait_for_log("first run", 0.3)
    finally:
        process.stop()

    assert "first run" in process.logs()
    assert "second run" in process.logs()


def test_wait_for_http_returns_status(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ready").write_text("ok")
    process = ServiceProcess(
        "http-server",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path / "www")],
        env=os.environ,
        log_path=tmp_path / "http-server.log",
    ).start()  # fmt: skip
    try:
        status = process.wait_for_http(f"http://127.0.0.1:{port}/ready", 10)
        missing = process.wait_for_http(f"http://127.0.0.1:{port}/absent", 5, expected_status=404)
    finally:
        process.stop()

    assert status == 200
    assert missing == 404


def test_failed_test_report_shows_service_log(tmp_path: Path) -> None:
    # Run a failing test in a separate pytest with a copy of this directory's
    # conftest.py, then check its report and that its process group is gone.
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(TESTS_DIR / "conftest.py", project / "conftest.py")
    pid_file = tmp_path / "sleeper.pid"
    (project / "test_failing.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            import os

            def test_fails(service_processes):
                sleeper = service_processes.start(
                    "sleeper",
                    ["sh", "-c", "echo sleeper says hello; sleep 300"],
                    env=dict(os.environ),
                )
                sleeper.wait_for_log("sleeper says hello", 5)
                Path({str(pid_file)!r}).write_text(str(sleeper.pid))
                assert False, "failing on purpose"
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR)}
    env.pop("PYTEST_ADDOPTS", None)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_failing.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "failing on purpose" in result.stdout
    assert "log of sleeper" in result.stdout
    assert "sleeper says hello" in result.stdout
    assert live_group_members(int(pid_file.read_text())) == []


# --- polling ---------------------------------------------------------------------------


async def test_eventually_returns_truthy_value() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    assert await eventually(check, timeout_s=5, interval_s=0.01, message="never reached 3") == 3


async def test_eventually_retries_assertion() -> None:
    values = iter([1, 2, 3])

    def check() -> bool:
        value = next(values)
        assert value == 3, f"value is {value}"
        return True

    assert await eventually(check, timeout_s=5, interval_s=0.01, message="no 3") is True


async def test_eventually_timeout_names_last_value() -> None:
    with pytest.raises(AssertionError) as caught:
        await eventually(lambda: [], timeout_s=0.2, interval_s=0.01, message="queue stayed empty")

    assert "queue stayed empty" in str(caught.value)
    assert "last value: []" in str(caught.value)


async def test_eventually_bounds_hanging_check() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    with pytest.raises(AssertionError, match="did not return within"):
        await eventually(hangs, timeout_s=0.2, message="check hung")

"""``prebook up`` as a user runs it: real child processes on loopback ports chosen here.

Each run gets its own data folder. Every process ``prebook up`` starts carries that
folder's path in its command line or its environment (the NATS store, the SQLite
URL), which is how the tests find them and prove that none is left behind.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prebook.up import Plan, port_problem, service_environment
from support.ports import LOOPBACK, free_port

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the tests find child processes in /proc (Linux)")

START_TIMEOUT_S = 60.0
BOOKING_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 60.0
# The demo class opens this long after the seed: enough for the scheduler to wake the
# gateway PREBOOK_LEAD_S (5 s) early.
DEMO_OPENS_IN_S = 10
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class UpRun:
    """One ``prebook up`` process, its data folder, output file and ports."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    output_path: Path
    ports: dict[str, int]

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"prebook up exited with {self.process.returncode} before printing {text!r}:\n{self.output()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"prebook up did not print {text!r} within {timeout_s} s:\n{self.output()}")
            time.sleep(0.1)

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"prebook up still runs {EXIT_TIMEOUT_S} s after the stop:\n{self.output()}") from None


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _clean_environment() -> dict[str, str]:
    """This test run's environment without PREBOOK_ settings, as on a fresh machine."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PREBOOK_")}


def processes_of(data_dir: Path) -> dict[int, str]:
    """Live processes (pid -> command line) whose command line or environment names ``data_dir``."""
    marker = str(data_dir).encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state in ("Z", "X"):
            continue
        if marker in cmdline or marker in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def _kill_leftovers(data_dir: Path) -> None:
    for pid in processes_of(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    runs: list[UpRun] = []

    def start(*options: str, ports: dict[str, int] | None = None, data_dir: Path | None = None) -> UpRun:
        # A random name, because the test finds processes by this path, and another
        # test run on this machine can have the same temporary folder names.
        data_dir = data_dir or tmp_path / f"data-{uuid.uuid4().hex}"
        output_path = tmp_path / f"up-{len(runs)}.out"
        chosen = ports or dict(zip(("gateway", "nats", "sim"), _free_ports(3), strict=True))
        command = [
            sys.executable, "-m", "prebook.cli", "up",
            "--data-dir", str(data_dir),
            "--gateway-port", str(chosen["gateway"]),
            "--nats-port", str(chosen["nats"]),
            "--sim-port", str(chosen["sim"]),
            *options,
        ]  # fmt: skip
        with output_path.open("wb") as output:
            # A session of its own, so a signal to its group is what a terminal's Ctrl-C sends.
            process = subprocess.Popen(
                command, cwd=tmp_path, env=_clean_environment(), stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        run = UpRun(process, data_dir, output_path, chosen)
        runs.append(run)
        return run

    yield start

    for run in runs:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait(timeout=EXIT_TIMEOUT_S)
        _kill_leftovers(run.data_dir)


def _booked_requests(sim_port: int) -> list[dict]:
    url = f"http://{LOOPBACK}:{sim_port}/_sim/requests?path=/api/book"
    try:
        with _NO_PROXY_OPENER.open(url, timeout=2) as response:
            requests = json.load(response)["requests"]
    except OSError:
        return []
    return [request for request in requests if (request.get("answer") or {}).get("bookState") == 1]


def _prebooking_statuses(data_dir: Path) -> list[str]:
    database = data_dir / "prebook.db"
    if not database.exists():
        return []
    with sqlite3.connect(database, timeout=5) as connection:
        return [row[0] for row in connection.execute("SELECT status FROM prebooking")]


def _wait_until(check, timeout_s: float, message: str, run: UpRun):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if run.process.poll() is not None:
            raise AssertionError(f"{message}: prebook up exited with {run.process.returncode}:\n{run.output()}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} within {timeout_s} s:\n{run.output()}")
        time.sleep(0.2)


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    """Record the path and content type of each export, and respond as an OTLP/HTTP receiver does."""

    exports: list[tuple[str, str]]

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.exports.append((self.path, self.headers.get("Content-Type", "")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """URL of an OTLP/HTTP endpoint on loopback, and the exports it received."""
    exports: list[tuple[str, str]] = []
    handler = type("Handler", (_OtlpHandler,), {"exports": exports})
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}", exports
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_up_demo_books_and_stops(start_up, otlp_receiver) -> None:
    otlp_url, exports = otlp_receiver
    run = start_up("--demo", "--demo-opens-in", str(DEMO_OPENS_IN_S), "--otlp-endpoint", otlp_url)

    booked = _wait_until(lambda: _booked_requests(run.ports["sim"]), BOOKING_TIMEOUT_S, "no booked request on the simulator", run)
    statuses = _wait_until(
        lambda: _prebooking_statuses(run.data_dir) == ["booked"] and ["booked"], BOOKING_TIMEOUT_S,
        "the demo prebooking was not stored as booked", run,
    )  # fmt: skip
    run.wait_for_output("booked, bookState 1", START_TIMEOUT_S)
    children = processes_of(run.data_dir)
    os.killpg(run.process.pid, signal.SIGINT)
    exit_status = run.wait_exit()
    # The services export their spans in batches, and at the latest when they stop.
    trace_exports = [content_type for path, content_type in exports if path == "/v1/traces"]

    assert len(booked) == 1
    assert statuses == ["booked"]
    for name in ("nats-server", "prebook.cli sim", "prebook.cli gateway", "prebook.cli executor", "prebook.cli scheduler"):
        assert any(name in command for command in children.values()), f"{name} was not running: {children}"
    assert exit_status == 0, run.output()
    assert processes_of(run.data_dir) == {}
    for name, port in run.ports.items():
        assert port_problem(LOOPBACK, port) is None, f"{name} port {port} is still taken"
    assert trace_exports, f"no OTLP export reached {otlp_url}"
    assert trace_exports[0] == "application/x-protobuf"


def test_up_stops_on_sigterm(start_up) -> None:
    run = start_up()

    run.wait_for_output("Prebook is running", START_TIMEOUT_S)
    children = {pid: command for pid, command in processes_of(run.data_dir).items() if pid != run.process.pid}
    run.process.send_signal(signal.SIGTERM)
    exit_status = run.wait_exit()

    for name in ("nats-server", "prebook.cli gateway", "prebook.cli executor", "prebook.cli scheduler"):
        assert any(name in command for command in children.values()), f"{name} was not running: {children}"
    assert exit_status == 0, run.output()
    assert processes_of(run.data_dir) == {}
    assert "Prebook stopped" in run.output()


def test_up_stops_gateway_workers_on_sigterm(start_up) -> None:
    run = start_up("--gateway-workers", "2")

    run.wait_for_output("Prebook is running", START_TIMEOUT_S)
    gateway_log = (run.data_dir / "logs" / "gateway.log").read_text()
    children = processes_of(run.data_dir)
    run.process.send_signal(signal.SIGTERM)
    exit_status = run.wait_exit()

    assert "with 2 worker processes (PREBOOK_GATEWAY_WORKERS)" in gateway_log
    # The two worker processes that the gateway's supervisor spawned.
    assert len([command for command in children.values() if "multiprocessing.spawn" in command]) == 2, children
    assert exit_status == 0, run.output()
    assert processes_of(run.data_dir) == {}
    assert "Prebook stopped" in run.output()


def test_up_reports_killed_child(start_up) -> None:
    run = start_up()
    run.wait_for_output("Prebook is running", START_TIMEOUT_S)
    executor_pid = next(pid for pid, command in processes_of(run.data_dir).items() if "prebook.cli executor" in command)

    os.kill(executor_pid, signal.SIGKILL)
    exit_status = run.wait_exit()
    output = run.output()

    assert exit_status == 1
    assert "executor stopped by SIGKILL unexpectedly" in output
    assert f"last lines of {run.data_dir / 'logs' / 'executor.log'}" in output
    assert "executor started" in output
    assert processes_of(run.data_dir) == {}


def test_up_rejects_taken_port(start_up) -> None:
    with ListeningSocket() as port:
        _, nats, sim = _free_ports(3)
        run = start_up(ports={"gateway": port, "nats": nats, "sim": sim})
        exit_status = run.wait_exit()

    assert exit_status == 2
    assert f"port {port} for gateway on 127.0.0.1 is already in use" in run.output()
    assert "--gateway-port" in run.output()
    assert processes_of(run.data_dir) == {}


def test_up_rejects_busy_data_dir(start_up, tmp_path: Path) -> None:
    data_dir = tmp_path / f"data-{uuid.uuid4().hex}"
    data_dir.mkdir()
    with (data_dir / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242")
        lock.flush()
        run = start_up(data_dir=data_dir)
        exit_status = run.wait_exit()

    assert exit_status == 2
    assert "another `prebook up` (pid 4242) is using" in run.output()


def test_demo_seed_refuses_real_aimharder(tmp_path: Path) -> None:
    database = tmp_path / "prebook.db"
    env = {**_clean_environment(), "PREBOOK_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}

    result = subprocess.run(
        [sys.executable, "-m", "prebook.cli", "demo", "seed", "--sim-url", f"http://{LOOPBACK}:{free_port()}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert "resolves to https://demo.aimharder.com" in result.stderr
    assert "PREBOOK_AIMHARDER_BOX_URLS" in result.stderr
    assert "instead of the simulator" in result.stderr
    assert not database.exists()


def test_child_environment_addresses(tmp_path: Path) -> None:
    plan = Plan(
        data_dir=tmp_path, host="0.0.0.0", gateway_port=8123, nats_port=4333, sim_port=8181,
        database_url="sqlite+aiosqlite:///x.db", demo=True, otlp_endpoint="http://127.0.0.1:4318",
        otel_console=True, gateway_workers=3,
    )  # fmt: skip

    env = service_environment(plan, "executor", base={"PREBOOK_PUBLIC_URL": "https://tunnel.example"})

    assert env["PREBOOK_NATS_URL"] == "nats://127.0.0.1:4333"
    assert env["PREBOOK_DATABASE_URL"] == "sqlite+aiosqlite:///x.db"
    assert env["PREBOOK_GATEWAY_PORT"] == "8123"
    assert env["PREBOOK_PUBLIC_URL"] == "https://tunnel.example"
    assert env["PREBOOK_LOCAL_DELIVERY_URL"] == "http://127.0.0.1:8123/v1/qstash/prepare"
    assert env["PREBOOK_AIMHARDER_BASE_URL"] == "http://127.0.0.1:8181"
    assert env["PREBOOK_AIMHARDER_LOGIN_URL"] == "http://127.0.0.1:8181"
    assert env["PREBOOK_OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["PREBOOK_OTEL_CONSOLE"] == "true"
    assert env["PREBOOK_SERVICE_NAME"] == "prebook-executor"
    assert env["PREBOOK_GATEWAY_WORKERS"] == "3"


class ListeningSocket:
    """A TCP socket listening on a free loopback port, as another program would."""

    def __enter__(self) -> int:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((LOOPBACK, 0))
        self._socket.listen()
        return self._socket.getsockname()[1]

    def __exit__(self, *exc_info: object) -> None:
        self._socket.close()

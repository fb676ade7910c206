"""``python -m prebook.healthcheck``, run as Docker runs it, against real servers on loopback."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from prebook.healthcheck import _decode_proc_address
from support.ports import LOOPBACK, free_port
from support.servers import NatsServerProcess

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="the nats check reads /proc/net/tcp (Linux)")


def _run_check(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prebook.healthcheck", *arguments],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_proc_address_ipv4() -> None:
    assert _decode_proc_address("0100007F:1092") == ("127.0.0.1", 4242)


def test_proc_address_ipv4_mapped_ipv6() -> None:
    assert _decode_proc_address("0000000000000000FFFF00000100007F:107E") == ("127.0.0.1", 4222)


def test_proc_address_ipv6_loopback() -> None:
    assert _decode_proc_address("00000000000000000000000001000000:107E") == ("::1", 4222)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    with NatsServerProcess(tmp_path / "jetstream", log_path=tmp_path / "nats.log") as server:
        yield server


def test_nats_check_follows_connection(nats_server: NatsServerProcess) -> None:
    env = {"PREBOOK_NATS_URL": nats_server.url}

    before = _run_check("nats", env=env)
    with socket.create_connection((LOOPBACK, nats_server.port), timeout=5) as client:
        client.recv(4096)  # the server's INFO line: the connection is established
        during = _run_check("nats", env=env)
    after = _run_check("nats", env=env)

    assert before.returncode == 1
    assert "no established TCP connection to NATS" in before.stderr
    assert during.returncode == 0, during.stderr
    assert f"connected to NATS at 127.0.0.1:{nats_server.port}" in during.stdout
    assert after.returncode == 1


def test_nats_check_unknown_host() -> None:
    result = _run_check("nats", env={"PREBOOK_NATS_URL": "nats://no-such-host.invalid:4222"})

    assert result.returncode == 1
    assert "cannot resolve NATS host 'no-such-host.invalid'" in result.stderr


class _ReadyzHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def readyz_server() -> Iterator[tuple[http.server.HTTPServer, type[_ReadyzHandler]]]:
    handler = type("Handler", (_ReadyzHandler,), {})
    server = http.server.HTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_gateway_check_reads_readyz(readyz_server) -> None:
    server, handler = readyz_server
    env = {"PREBOOK_GATEWAY_PORT": str(server.server_address[1])}

    ready = _run_check("gateway", env=env)
    handler.status = 503
    not_ready = _run_check("gateway", env=env)

    assert ready.returncode == 0, ready.stderr
    assert not_ready.returncode == 1
    assert "returned status 503" in not_ready.stderr


def test_gateway_check_nothing_listening() -> None:
    result = _run_check("gateway", env={"PREBOOK_GATEWAY_PORT": str(free_port())})

    assert result.returncode == 1
    assert "failed" in result.stderr


def test_usage_for_unknown_check() -> None:
    result = _run_check("executor", env={})

    assert result.returncode == 2
    assert "usage:" in result.stderr

"""Child processes of ``prebook up``: one process group and one log file each, and readiness checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

__all__ = ["Child", "ChildFailure", "ReadyCheck", "http_ready", "log_ready", "nats_ready"]

PROBE_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 20

ReadyCheck = Callable[["Child"], Awaitable[bool]]


@dataclass
class Child:
    """One child process, in its own process group, with its output in a log file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    address: str
    ready_check: ReadyCheck
    process: asyncio.subprocess.Process | None = None
    state: str = "not started"
    _log_offset: int = field(default=0, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            log.write(f"----- prebook up: {self.name} starting at {stamp} -----\n".encode())
            log.flush()
            self._log_offset = log.tell()
            # A new session, so the terminal's Ctrl-C reaches only `prebook up`, which
            # then stops the children in order, and a signal to the group reaches
            # anything the child started.
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self.state = "starting"

    def signal_group(self, signum: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def group_alive(self) -> bool:
        """Return whether any process of the child's group still exists.

        The leader counts until it is reaped.
        """
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            # A member that switched to another user cannot be signalled, but it runs.
            return True
        return True

    def log_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_since_start().splitlines()[-lines:])

    def describe_exit(self) -> str:
        code = self.process.returncode if self.process else None
        if code is None:
            return "running"
        if code < 0:
            return f"stopped by {signal.Signals(-code).name}"
        return f"exited with status {code}"


class ChildFailure(Exception):
    """A child exited on its own or did not become ready."""

    def __init__(self, child: Child, reason: str) -> None:
        super().__init__(f"{child.name} {reason}")
        self.child = child
        self.reason = reason


def http_ready(url: str) -> ReadyCheck:
    async def check(child: Child) -> bool:
        # The children listen on this machine, never behind a proxy from the environment.
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False) as client:
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                return False
        return response.is_success

    return check


def log_ready(pattern: str) -> ReadyCheck:
    regex = re.compile(pattern)

    async def check(child: Child) -> bool:
        return regex.search(child.log_since_start()) is not None

    return check


def nats_ready(host: str, port: int) -> ReadyCheck:
    """Check for the server's INFO greeting with JetStream enabled."""

    async def check(child: Child) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[len(b"INFO ") :])
        except ValueError:
            return False
        return info.get("jetstream") is True

    return check

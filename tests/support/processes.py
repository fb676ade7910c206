"""Child processes for tests: services, servers and anything else started from a command.

Each process runs in its own session, and so in its own process group, with stdout and
stderr appended to one log file. Stopping it signals the whole group, so a shell
wrapper or a worker started by the service does not outlive the test.

The wait methods block the calling thread. From an async test, call them through
`await asyncio.to_thread(process.wait_for_http, url, 10)` so the event loop keeps
running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, Self, TypeVar

__all__ = [
    "LoggedProcess",
    "ProcessExitedError",
    "ServiceProcess",
    "ServiceProcesses",
    "live_group_members",
]

# Requests to the services under test must never go through a proxy from the
# environment, because every server they wait for listens on loopback.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

LOG_TAIL_CHARS = 20_000

_P = TypeVar("_P", bound="LoggedProcess")


class ProcessExitedError(RuntimeError):
    """A process exited while a test was still waiting for it to become ready."""


class LoggedProcess(Protocol):
    """A process that writes a log file and can be stopped, as ServiceProcesses tracks."""

    name: str
    log_path: Path

    def logs(self) -> str: ...

    def stop(self, timeout_s: float = ...) -> int | None: ...


class ServiceProcess:
    """One command run as a child process in its own process group, logging to a file.

    The same object can be started again after `stop()` or `kill()`. The log file is
    appended to, and `wait_for_log` only searches the output of the latest start.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"ServiceProcess(name={self.name!r}, pid={self.pid}, running={self.running})"

    @property
    def pid(self) -> int | None:
        """Process id of the started command, which is also its process group id."""
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the latest start, None while running or before any start."""
        return self._popen.poll() if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> Self:
        """Start the command. Raises RuntimeError if it is already running."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running with pid {self.pid}")

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            # start_new_session makes the child the leader of a new process group,
            # so stop() can signal every process the command started.
            self._popen = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Send SIGTERM to the process group, then SIGKILL to what is left after `timeout_s`.

        Returns the exit status of the started command, or None if it was never started.
        Raises RuntimeError if processes of the group are still alive after SIGKILL.
        """
        if self._popen is None:
            return None

        pgid = self._popen.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        try:
            self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass

        # The leader may exit on SIGTERM while a child that ignores it stays, so the
        # group gets SIGKILL unless all of it is gone by the deadline.
        if not _wait_until_group_gone(pgid, max(deadline - time.monotonic(), 0.0)):
            self._kill_group(pgid)
        return self._popen.returncode

    def kill(self) -> int | None:
        """Send SIGKILL to the process group and wait until it is gone.

        Returns the exit status of the started command, or None if it was never started.
        """
        if self._popen is None:
            return None
        self._kill_group(self._popen.pid)
        return self._popen.returncode

    def _kill_group(self, pgid: int) -> None:
        _signal_group(pgid, signal.SIGKILL)
        self._popen.wait(timeout=10.0)
        if not _wait_until_group_gone(pgid, 10.0):
            raise RuntimeError(
                f"{self.name}: processes {live_group_members(pgid)} of group {pgid} "
                "are still alive 10 s after SIGKILL"
            )

    def logs(self) -> str:
        """Return the whole log file, from every start of this process."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, max_chars: int = LOG_TAIL_CHARS) -> str:
        """Return the end of the log file, marked as cut when it is longer than `max_chars`."""
        text = self.logs()
        if len(text) <= max_chars:
            return text
        cut = len(text) - max_chars
        return f"[first {cut} characters cut, see {self.log_path}]\n{text[-max_chars:]}"

    def logs_since_start(self) -> str:
        """Return the output of the latest start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str | re.Pattern[str], deadline_s: float) -> re.Match[str]:
        """Wait until the output of the latest start matches `pattern` (re.search).

        `deadline_s` is the number of seconds from the call. Returns the match.
        Raises ProcessExitedError if the process exits first and TimeoutError after
        `deadline_s`. Both errors end with the log.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + deadline_s

        while True:
            match = regex.search(self.logs_since_start())
            if match:
                return match
            self._raise_if_exited(f"log line matching {regex.pattern!r}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: no log line matched {regex.pattern!r} within "
                    f"{deadline_s} s\n{self._describe_log()}"
                )
            time.sleep(0.05)

    def wait_for_http(
        self,
        url: str,
        deadline_s: float,
        *,
        expected_status: range | int = range(200, 300),
    ) -> int:
        """Wait until a GET of `url` returns a status in `expected_status`.

        `deadline_s` is the number of seconds from the call. Each request times out
        after at most one second. Returns the status. Raises ProcessExitedError if the
        process exits first and TimeoutError after `deadline_s`. Both errors end with
        the log and the last response or connection error.
        """
        if isinstance(expected_status, int):
            statuses = range(expected_status, expected_status + 1)
        else:
            statuses = expected_status
        deadline = time.monotonic() + deadline_s
        last_result = "no request sent"

        while True:
            request_timeout_s = min(1.0, max(deadline - time.monotonic(), 0.1))
            status, last_result = _http_get_status(url, timeout_s=request_timeout_s)
            if status in statuses:
                return status
            self._raise_if_exited(f"GET {url}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: GET {url} did not return a status in {statuses} within "
                    f"{deadline_s} s (last result: {last_result})\n{self._describe_log()}"
                )
            time.sleep(0.05)

    def _raise_if_exited(self, awaited: str) -> None:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started; call start() first")
        code = self._popen.poll()
        if code is not None:
            raise ProcessExitedError(
                f"{self.name} exited with status {code} while waiting for {awaited}\n"
                f"{self._describe_log()}"
            )

    def _describe_log(self) -> str:
        return f"--- log of {self.name} ({self.log_path}) ---\n{self.log_tail()}"


class ServiceProcesses:
    """The processes one test started, stopped together in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._processes: list[LoggedProcess] = []

    def __iter__(self) -> Iterator[LoggedProcess]:
        return iter(self._processes)

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> ServiceProcess:
        """Start `command` as a tracked ServiceProcess logging to `<log_dir>/<name>.log`."""
        used_log_names = {process.log_path.name for process in self._processes}
        log_name = f"{name}.log"
        suffix = 2
        while log_name in used_log_names:
            log_name = f"{name}-{suffix}.log"
            suffix += 1

        log_path = self.log_dir / log_name
        process = ServiceProcess(name, command, env=env, log_path=log_path, cwd=cwd)
        self._processes.append(process)
        return process.start()

    def add(self, process: _P) -> _P:
        """Track a process started elsewhere, such as a NatsServerProcess, and return it."""
        self._processes.append(process)
        return process

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every tracked process, newest first.

        Every process gets its stop call even when an earlier one raises. The first
        error is raised afterwards.
        """
        errors: list[Exception] = []
        for process in reversed(self._processes):
            try:
                process.stop(timeout_s)
            except Exception as exc:  # noqa: BLE001 - collected and raised below
                errors.append(exc)
        if errors:
            raise errors[0]


def live_group_members(pgid: int) -> list[int]:
    """Return the ids of processes in group `pgid` that have not exited.

    Zombies count as exited because they run no code, and a test cannot make the init
    process reap the orphans it adopted. Reads /proc on Linux. Elsewhere it returns
    [pgid] while signal 0 reaches the group.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]

    members: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # The command name in brackets may contain spaces, so split after its closing
        # bracket. The fields after it are: state, ppid, pgrp, ...
        fields = stat[stat.rindex(")") + 2 :].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _wait_until_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while live_group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _http_get_status(url: str, *, timeout_s: float) -> tuple[int | None, str]:
    """Return the status of a GET of `url` and a description for error messages."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout_s) as response:
            return response.status, f"status {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, f"status {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"

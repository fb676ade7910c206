"""Shared parts of Prebook's benchmarks: machine facts, percentiles, processes, the results page.

Each benchmark is a script run as ``uv run python bench/<name>.py [--quick]``. It starts
the servers it needs as child processes, prints its tables and rewrites its own section
of docs/benchmarks.md, between the markers ``<!-- bench:<name>:start -->`` and
``<!-- bench:<name>:end -->``.

The child processes, free ports, fresh Postgres databases and JetStream names come from
the test support package in tests/support, so benchmarks and tests start servers the
same way.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import platform
import re
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "benchmarks.md"

# The support package is imported as `support`, as the tests import it.
sys.path.insert(0, str(ROOT / "tests"))

from support.ports import free_port  # noqa: E402
from support.processes import ServiceProcess  # noqa: E402

__all__ = [
    "DOC_PATH",
    "ROOT",
    "CpuSampler",
    "Machine",
    "Summary",
    "command_line",
    "free_port",
    "log_dir",
    "markdown_table",
    "raise_fd_limit",
    "rss_bytes",
    "start_simulator",
    "summarize",
    "write_section",
]

PERCENTILES = (50, 90, 99)
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SIMULATOR_START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Machine:
    """Hardware and software that a measurement ran on, and the load when it started."""

    cpu: str
    cores: int
    kernel: str
    python: str
    load_average: tuple[float, float, float]

    @classmethod
    def read(cls) -> Machine:
        cpu = "unknown CPU"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return cls(
            cpu=cpu,
            cores=os.cpu_count() or 1,
            kernel=platform.release(),
            python=platform.python_version(),
            load_average=os.getloadavg(),
        )

    def describe_load(self) -> str:
        one, five, fifteen = self.load_average
        return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"

    def markdown(self) -> str:
        """Return the facts as a Markdown list, with the load at the start of the run."""
        return "\n".join(
            [
                f"- Machine: {self.cpu}, {self.cores} cores, Linux {self.kernel}, Python {self.python}",
                f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
                f"- Load average at the start: {self.describe_load()}",
            ]
        )


@dataclass(frozen=True)
class Summary:
    """Percentiles of one set of samples, in the samples' unit (nearest-rank method)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    def cells(self, scale: float = 1.0, digits: int = 0) -> list[str]:
        """Return p50, p90, p99 and max divided by ``scale``, formatted for a table."""
        return [f"{value / scale:,.{digits}f}" for value in (self.p50, self.p90, self.p99, self.max)]


def summarize(samples: Sequence[float]) -> Summary:
    """Return the p50, p90, p99 and max of ``samples``. Raises ValueError when it is empty."""
    if not samples:
        raise ValueError("Cannot summarize an empty list of samples")
    ordered = sorted(samples)

    def rank(percent: int) -> float:
        # Nearest rank: the smallest sample with at least `percent` % of the samples at or below it.
        return ordered[max(math.ceil(percent / 100 * len(ordered)) - 1, 0)]

    return Summary(len(ordered), rank(50), rank(90), rank(99), ordered[-1])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    """Return the command that ran this benchmark, as a user would type it in the repository."""
    script = Path(sys.argv[0]).resolve()
    try:
        display_path = script.relative_to(ROOT)
    except ValueError:
        display_path = script
    return shlex.join(["uv", "run", "python", str(display_path), *sys.argv[1:]])


def write_section(name: str, markdown: str) -> None:
    """Replace the section ``name`` of docs/benchmarks.md with ``markdown``, or append it."""
    start = f"<!-- bench:{name}:start -->"
    end = f"<!-- bench:{name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"

    text = DOC_PATH.read_text() if DOC_PATH.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(text)
    print(f"Updated the {name} section of {DOC_PATH.relative_to(ROOT)}")


def raise_fd_limit(requested: int) -> int:
    """Raise this process's open-file limit toward ``requested`` and return the soft limit reached.

    Child processes inherit the limit, so call this before starting servers with many
    connections. Raising the hard limit needs CAP_SYS_RESOURCE. Without it the soft
    limit stops at the hard one, and the result is below ``requested``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= requested:
        return soft
    if hard != resource.RLIM_INFINITY and hard < requested:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (requested, requested))
            return requested
        except (ValueError, OSError):
            requested = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (requested, hard))
    return requested


def log_dir(name: str) -> Path:
    """Create and print a new directory for the logs of one run's child processes, and return it.

    The directory is kept after the run, so the logs can be read when a number looks wrong.
    """
    path = Path(tempfile.mkdtemp(prefix=f"prebook-bench-{name}-"))
    print(f"Logs of the child processes: {path}")
    return path


async def start_simulator(logs: Path, *, env: dict[str, str] | None = None) -> tuple[ServiceProcess, str]:
    """Start the AimHarder simulator as a child process and return it and its base URL.

    It logs at WARNING, so it writes no line per request. Raises TimeoutError with the
    simulator's log when it does not respond within 20 s.
    """
    port = free_port()
    process = ServiceProcess(
        "simulator",
        [sys.executable, "-m", "prebook_simulator", "--port", str(port), "--log-level", "WARNING"],
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        log_path=logs / "simulator.log",
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(process.wait_for_http, f"{url}/_sim/config", SIMULATOR_START_TIMEOUT_S)
    return process, url


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid`` in bytes, read from /proc."""
    with open(f"/proc/{pid}/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * PAGE_BYTES


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time that process ``pid`` used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name in brackets may contain spaces, so split after its closing bracket.
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after that bracket.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def process_group(pgid: int) -> list[int]:
    """Return the ids of the running processes in process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                pids.append(int(entry))
        except ProcessLookupError:
            continue
    return pids


class CpuSampler:
    """CPU use of one or more processes, added up, between ``start()`` and ``stop()``, as a % of one core."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self._cpu_start = 0.0
        self._wall_start = 0.0

    def start(self) -> None:
        self._cpu_start = self._cpu_seconds()
        self._wall_start = time.monotonic()

    def stop(self) -> tuple[float, float]:
        """Return the CPU seconds used and the % of one core over the wall time since start."""
        used_s = self._cpu_seconds() - self._cpu_start
        wall_s = time.monotonic() - self._wall_start
        return used_s, 100.0 * used_s / wall_s

    def _cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

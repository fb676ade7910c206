"""Parked and idle: memory and CPU of one executor process with 10,000 parked bookings.

The bookings go through the executor's real consumer path. The benchmark stores the
prebookings and publishes one prepare event each to JetStream, as the gateway does.
The executor claims each one, loads its session, stages its connections to the
simulator (1 + PREBOOK_TOO_EARLY_RETRIES each) and parks it on the FireClock, after
acknowledging its event. The targets lie minutes ahead, spread over 100 instants one second
apart. Once every booking is parked, the benchmark reads the executor's resident
memory and CPU time from /proc over a window of ``--window`` seconds, then kills the
executor before any booking fires.

Run: ``uv run python bench/parked_idle.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import nats
from harness import CpuSampler, Machine, command_line, log_dir, markdown_table, raise_fd_limit, rss_bytes, write_section
from services import BOX, BOX_ID, BenchServices

from prebook_common.events import PrebookingPrepare
from prebook_common.settings import Settings

CLASS_ID = "7200"
CLASS_DAY = date(2030, 3, 4)
INSTANTS = 100
# The first target lies this far ahead of the publish, longer than parking and the
# measurement window take, so no booking fires during the measurement.
FIRST_TARGET_AHEAD_S = 300
PARK_TIMEOUT_S = 600.0
# Parking stops making progress when redeliveries take over the executor.
STALL_TIMEOUT_S = 30.0
SETTLE_S = 5.0
IDLE_WINDOW_S = 5.0
SAMPLE_INTERVAL_S = 1.0
PUBLISH_CONCURRENCY = 200
TARGET_RSS_MB = 200
TARGET_CPU_PERCENT = 2.0


PARKED_ID = re.compile(r"prebooking ([0-9a-f-]{36}) parked: fires in ")
REDELIVERED = re.compile(r"\(delivery [2-9]|\(delivery [1-9][0-9]")


@dataclass(frozen=True)
class LogCounts:
    """Counts from the executor's log: parked bookings, repeats and redeliveries."""

    parked: int
    parked_twice: int
    redelivered: int
    taken_over: int


def count_parked(log_path: Path) -> LogCounts:
    text = log_path.read_text(errors="replace")
    parked = Counter(PARKED_ID.findall(text))
    return LogCounts(
        parked=len(parked),
        parked_twice=sum(1 for times in parked.values() if times > 1),
        redelivered=len(REDELIVERED.findall(text)),
        taken_over=text.count(" taken over from "),
    )


async def publish_prepare_events(services: BenchServices, ids: list, targets_ms: list[int]) -> None:
    client = await nats.connect(services.nats_url, connect_timeout=5)
    try:
        jetstream = client.jetstream()
        subject = services.names.subject("prepare")
        semaphore = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def publish(prebooking_id, execute_at_ms: int) -> None:
            event = PrebookingPrepare(
                prebooking_id=prebooking_id,
                box_subdomain=BOX,
                box_aimharder_id=BOX_ID,
                execute_at_ms=execute_at_ms,
                received_at_ns=time.time_ns(),
            )
            async with semaphore:
                await jetstream.publish(
                    subject, event.to_bytes(), stream=services.names.stream, headers={"Nats-Msg-Id": event.message_id}
                )

        await asyncio.gather(*(publish(prebooking_id, target) for prebooking_id, target in zip(ids, targets_ms)))
    finally:
        await client.close()


async def wait_for_parked(log_path: Path, count: int, executor_pid: int) -> float:
    """Wait until ``count`` bookings are parked and return the seconds it took."""
    started = time.monotonic()
    last_report = started
    last_progress = (started, 0)
    while True:
        counts = count_parked(log_path)
        if counts.parked >= count:
            return time.monotonic() - started
        now = time.monotonic()
        if counts.parked > last_progress[1]:
            last_progress = (now, counts.parked)
        if now - started > PARK_TIMEOUT_S or now - last_progress[0] > STALL_TIMEOUT_S:
            raise TimeoutError(
                f"Only {counts.parked} of {count} bookings were parked after {now - started:.0f} s, with no new one "
                f"for {now - last_progress[0]:.0f} s ({counts.redelivered} redeliveries, {counts.taken_over} take-overs, "
                f"{counts.parked_twice} bookings parked twice); see {log_path}"
            )
        if now - last_report >= 10:
            print(
                f"  {counts.parked} parked after {now - started:.0f} s, executor RSS {rss_bytes(executor_pid) / 2**20:.0f} MB, "
                f"{counts.redelivered} redeliveries"
            )
            last_report = now
        await asyncio.sleep(0.5)


async def measure(
    arguments: argparse.Namespace, count: int, retries: int, ack_wait_s: float | None, window_s: float, logs: Path
) -> dict:
    extra_env = {
        "PREBOOK_EXECUTOR_MAX_PARKED": str(max(count, Settings(_env_file=None).executor_max_parked)),
        "PREBOOK_TOO_EARLY_RETRIES": str(retries),
    }
    if ack_wait_s is not None:
        extra_env["PREBOOK_ACK_WAIT_S"] = str(ack_wait_s)
    async with BenchServices(logs, database=arguments.database, nats_url=arguments.nats_url, extra_env=extra_env) as services:
        await services.start_simulator()
        executor = await services.start_executor()
        await asyncio.sleep(SETTLE_S)
        baseline_rss = rss_bytes(executor.pid)
        idle_cpu = CpuSampler(executor.pid)
        idle_cpu.start()
        await asyncio.sleep(IDLE_WINDOW_S)
        baseline_cpu = idle_cpu.stop()[1]

        first_target_ms = time.time_ns() // 1_000_000 + FIRST_TARGET_AHEAD_S * 1000
        targets_ms = [first_target_ms + (index % INSTANTS) * 1000 for index in range(count)]
        users = [f"idle{index}@bench.example.com" for index in range(count)]
        ids = await services.store_prebookings(users, class_id=CLASS_ID, class_day=CLASS_DAY, execute_at_ms=targets_ms)

        publish_started = time.monotonic()
        await publish_prepare_events(services, ids, targets_ms)
        publish_s = time.monotonic() - publish_started
        park_s = await wait_for_parked(logs / "executor.log", count, executor.pid)
        print(f"{count} bookings parked {park_s:.1f} s after the publish started ({publish_s:.1f} s to publish)")

        await asyncio.sleep(SETTLE_S)
        samples = []
        cpu = CpuSampler(executor.pid)
        cpu.start()
        window_end = time.monotonic() + window_s
        while time.monotonic() < window_end:
            samples.append(rss_bytes(executor.pid))
            await asyncio.sleep(SAMPLE_INTERVAL_S)
        cpu_s, cpu_percent = cpu.stop()
        if time.time_ns() // 1_000_000 >= first_target_ms:
            raise RuntimeError("The first target passed during the measurement; raise FIRST_TARGET_AHEAD_S")

        connections = open_connections(executor.pid)
        counts = count_parked(logs / "executor.log")
        staging_failures = (logs / "executor.log").read_text(errors="replace").count("could not be staged")
        if staging_failures:
            raise RuntimeError(
                f"{staging_failures} bookings could not stage all their connections, so they would fall back "
                f"to httpx; see {logs / 'executor.log'}"
            )
        # Killed, not stopped: a clean stop waits for every parked booking to fire.
        await asyncio.to_thread(executor.kill)
        return {
            "baseline_rss": baseline_rss,
            "baseline_cpu": baseline_cpu,
            "rss_samples": samples,
            "cpu_s": cpu_s,
            "cpu_percent": cpu_percent,
            "park_s": park_s,
            "publish_s": publish_s,
            "connections": connections,
            "counts": counts,
        }


def open_connections(pid: int) -> int:
    """Return the number of sockets that process ``pid`` has open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if fd.readlink().name.startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def parse_configurations(text: str) -> list[tuple[int, int, float | None]]:
    """Parse "BOOKINGS:RETRIES[:ACK_WAIT_S],..." into (bookings, retries, ack wait or None) triples."""
    configurations = []
    for item in text.split(","):
        parts = item.split(":")
        retries = int(parts[1]) if len(parts) > 1 else 0
        ack_wait_s = float(parts[2]) if len(parts) > 2 else None
        configurations.append((int(parts[0]), retries, ack_wait_s))
    return configurations


def verdict(value: float, target: float, unit: str, digits: int) -> str:
    if value <= target:
        return f"met ({value:,.{digits}f} {unit} ≤ {target:g} {unit})"
    return f"**not met**: {value:,.{digits}f} {unit}, {value - target:,.{digits}f} {unit} over {target:g} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the memory and CPU of an executor holding parked bookings.")
    parser.add_argument("--quick", action="store_true", help="park 1,000 bookings per configuration and measure for 10 s")
    parser.add_argument(
        "--configurations",
        help="comma-separated BOOKINGS:RETRIES[:ACK_WAIT_S] runs, each in a fresh executor, with RETRIES as "
        "PREBOOK_TOO_EARLY_RETRIES and ACK_WAIT_S as PREBOOK_ACK_WAIT_S (default 10000:0,2000:0, or "
        "1000:0,1000:0:30 with --quick)",
    )
    parser.add_argument("--window", type=float, help="seconds of measurement once all are parked (default 20, 10 with --quick)")
    parser.add_argument("--database", default="postgres", choices=["postgres", "sqlite"], help="database (default postgres)")
    parser.add_argument("--nats-url", help="use this NATS server (JetStream on) instead of starting nats-server")
    arguments = parser.parse_args()
    default_configurations = "1000:0,1000:0:30" if arguments.quick else "10000:0,2000:0"
    configurations = parse_configurations(arguments.configurations or default_configurations)
    window_s = arguments.window or (10.0 if arguments.quick else 20.0)

    # Every booking stages 1 + retries sockets, and the simulator has the other ends open.
    needed_fds = max(bookings * (1 + retries) for bookings, retries, _ in configurations) + 4096
    fd_limit = raise_fd_limit(needed_fds)
    if fd_limit < needed_fds:
        print(f"The open-file limit stays at {fd_limit}, below the {needed_fds} this run needs")
    machine = Machine.read()
    print(f"Load average at start: {machine.describe_load()}")
    started = time.monotonic()
    mb = 2**20
    rows = []
    targets = []
    failures: list[str] = []
    park_times = []
    settings = Settings(_env_file=None)
    for bookings, retries, ack_wait_s in configurations:
        logs = log_dir(f"parked-idle-{bookings}-{retries}")
        ack_wait_cell = f"{ack_wait_s or settings.ack_wait_s:g} s" + ("" if ack_wait_s else " (default)")
        try:
            result = asyncio.run(measure(arguments, bookings, retries, ack_wait_s, window_s, logs))
        except TimeoutError as exc:
            print(f"{bookings} bookings x {1 + retries} connections, ack wait {ack_wait_cell}: {exc}")
            failures.append(f"- {bookings:,} bookings, {1 + retries} connection(s) each, ack wait {ack_wait_cell}: {exc}")
            continue
        counts = result["counts"]
        rss_max = max(result["rss_samples"])
        per_booking_kb = (rss_max - result["baseline_rss"]) / bookings / 1024
        print(
            f"{bookings} bookings x {1 + retries} connections: RSS {result['baseline_rss'] / mb:.0f} MB idle, "
            f"{rss_max / mb:.0f} MB parked ({per_booking_kb:.1f} KB per booking); CPU {result['cpu_percent']:.2f} % "
            f"of one core parked, {result['baseline_cpu']:.2f} % idle; {result['connections']} sockets open"
        )
        rows.append(
            [
                f"{bookings:,}",
                str(1 + retries),
                ack_wait_cell,
                f"{counts.redelivered:,} / {counts.taken_over:,} / {counts.parked_twice:,}",
                f"{result['connections']:,}",
                f"{result['park_s']:.0f}",
                f"{result['baseline_rss'] / mb:.0f}",
                f"{rss_max / mb:.0f}",
                f"{per_booking_kb:.1f}",
                f"{result['baseline_cpu']:.2f}",
                f"{result['cpu_percent']:.2f}",
            ]
        )
        park_times.append(result["park_s"])
        if bookings >= 10_000:
            targets.append(
                f"- {bookings:,} parked bookings ({1 + retries} {'connection' if retries == 0 else 'connections'} each, "
                f"ack wait {ack_wait_cell}), under {TARGET_RSS_MB} MB: {verdict(rss_max / mb, TARGET_RSS_MB, 'MB', 0)}; "
                f"under {TARGET_CPU_PERCENT:g} % CPU while waiting: {verdict(result['cpu_percent'], TARGET_CPU_PERCENT, '%', 2)}."
            )
    elapsed_s = time.monotonic() - started
    print(f"Load average at the end: {Machine.read().describe_load()}")

    table = markdown_table(
        ["parked bookings", "connections each", "ack wait", "redelivered / taken over / parked twice", "sockets open", "parking took (s)", "RSS idle (MB)",
         "RSS parked, max (MB)", "KB per booking", "CPU idle (% of a core)", "CPU parked (% of a core)"],
        rows,
    )  # fmt: skip
    section = f"""## Parked and idle

One executor process (`prebook executor`, INFO logging) holds the parked bookings, which
came through its real consumer path. The benchmark stores the prebookings in a
{arguments.database} database and publishes one prepare event per prebooking to JetStream
(a nats-server it starts). The executor claims each one, loads its session, stages
1 + PREBOOK_TOO_EARLY_RETRIES connections to the simulator, acknowledges the event and
parks the booking on the FireClock. The targets lie
{FIRST_TARGET_AHEAD_S // 60} minutes ahead, spread over {INSTANTS} instants one second apart. Once all are parked and {SETTLE_S:g} s have passed, the
benchmark samples the resident set (/proc/PID/statm) every {SAMPLE_INTERVAL_S:g} s and the
CPU time (/proc/PID/stat) over {window_s:g} s, then kills the executor before any booking
fires. "Idle" is the same process over {IDLE_WINDOW_S:g} s before the first event. Each
configuration runs in a fresh executor, simulator, nats-server and database. A parked
booking sends nothing while it waits: the executor renews one lease row every third of
PREBOOK_EXECUTOR_LEASE_S and runs one takeover query every PREBOOK_EXECUTOR_TAKEOVER_SCAN_S,
whatever the number of bookings, so the ack wait no longer sets the background work. The
redelivered, taken over and parked twice counts come from the executor's log, and all
three are 0 in a healthy run.

The default of 3 retries stages 4 connections per booking, so 10,000 bookings would need
40,000 sockets in the executor and as many in the simulator. This machine's hard limit
is {fd_limit:,} open files per process and raising it is not permitted here, so the
10,000-booking runs use PREBOOK_TOO_EARLY_RETRIES=0 (one connection each), and
`--configurations 2000:3:30` measures 4 connections each on fewer bookings.

{machine.markdown()}
- Command: `{command_line()}` ({elapsed_s:.0f} s)

{table}

{chr(10).join(targets) if targets else "- The targets are for 10,000 bookings, which this run did not park."}
{(chr(10) + "Configurations that did not finish parking:" + chr(10) + chr(10) + chr(10).join(failures) + chr(10)) if failures else ""}"""
    write_section("parked_idle", section)


if __name__ == "__main__":
    main()

"""Callback to parked: from the gateway receiving a QStash callback to the booking parked in the executor.

Real processes: the simulator, the gateway and the executor (``python -m prebook.cli``),
a nats-server started here unless ``--nats-url`` is given, and a SQLite file or a
fresh Postgres database. N prebookings are stored, then one signed callback per
prebooking is sent, first paced (one at a time) and then in a burst (all at once). The
executor's INFO line ``prebooking <id> parked: fires in F ms (received R, loaded in L
ms, staged in S ms)`` gives the times. R is the gateway's ``time.time_ns()`` when the
callback route started, and the parked instant is the target minus F. L runs from the
handler's start to the loaded session, and S from there to parked.

Run: ``uv run python bench/callback_to_parked.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
from harness import Machine, command_line, log_dir, markdown_table, raise_fd_limit, summarize, write_section
from services import CURRENT_KEY, TOKEN_SECRET, BenchServices

from prebook_common.signatures import sign
from prebook_common.token import make_token
from support.stack import BOX, BOX_ID

CLASS_ID = "7100"
CLASS_DAY = date(2030, 2, 11)
# Time between paced callbacks: longer than one callback takes, so none waits for another.
PACED_INTERVAL_S = 0.025
# Paced callbacks sent first and reported apart, because the first ones after a start
# pay for imports, connection pools and compiled statements.
WARM_UP_COUNT = 10
# Time from the last callback to the instant at which every booking fires.
FIRE_MARGIN_MS = 4_000
WAIT_TIMEOUT_S = 120.0
TARGET_P99_MS = 15.0

PARKED_LINE = re.compile(
    r"prebooking (?P<id>[0-9a-f-]{36}) parked: fires in (?P<fires_ms>-?[\d.]+) ms "
    r"\(received (?P<received_ns>\d+), loaded in (?P<loaded_ms>-?[\d.]+) ms, staged in (?P<staged_ms>-?[\d.]+) ms\)"
)


@dataclass
class Phase:
    """Callbacks of one sending pattern and what the executor logged for them."""

    name: str
    ids: list[uuid.UUID]
    statuses: list[int] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    to_handler_ms: list[float] = field(default_factory=list)
    loaded_ms: list[float] = field(default_factory=list)
    staged_ms: list[float] = field(default_factory=list)


def callback(services: BenchServices, prebooking_id: uuid.UUID, execute_at_ms: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "prebookingId": str(prebooking_id),
            "executeAt": execute_at_ms,
            "boxSubdomain": BOX,
            "boxAimharderId": int(BOX_ID),
            "securityToken": make_token(TOKEN_SECRET, prebooking_id, execute_at_ms),
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": sign(body, services.callback_url, CURRENT_KEY),
        "Upstash-Message-Id": f"msg_{uuid.uuid4().hex}",
        "Upstash-Retried": "0",
    }
    return body, headers


async def send_paced(client: httpx.AsyncClient, services: BenchServices, phase: Phase, execute_at_ms: int) -> None:
    calls = [callback(services, prebooking_id, execute_at_ms) for prebooking_id in phase.ids]
    next_at = time.monotonic()
    for body, headers in calls:
        await asyncio.sleep(max(next_at - time.monotonic(), 0))
        response = await client.post("/v1/qstash/prepare", content=body, headers=headers)
        phase.statuses.append(response.status_code)
        next_at += PACED_INTERVAL_S


async def send_burst(services: BenchServices, phase: Phase, execute_at_ms: int) -> None:
    calls = [callback(services, prebooking_id, execute_at_ms) for prebooking_id in phase.ids]
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=len(calls))
    async with httpx.AsyncClient(base_url=services.gateway_url, limits=limits, timeout=60.0) as client:
        # Open every connection first, so the burst measures the services and not connecting.
        await asyncio.gather(*(client.get("/healthz") for _ in calls))
        responses = await asyncio.gather(
            *(client.post("/v1/qstash/prepare", content=body, headers=headers) for body, headers in calls)
        )
    phase.statuses += [response.status_code for response in responses]


async def wait_for_parked(log_path: Path, count: int) -> dict[str, re.Match[str]]:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        matches = {match["id"]: match for match in PARKED_LINE.finditer(log_path.read_text(errors="replace"))}
        if len(matches) >= count:
            return matches
        if time.monotonic() > deadline:
            raise TimeoutError(f"Only {len(matches)} of {count} bookings were parked within {WAIT_TIMEOUT_S} s; see {log_path}")
        await asyncio.sleep(0.2)


async def wait_for_bookings(sim: httpx.AsyncClient, count: int) -> list[dict]:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        response = await sim.get("/_sim/requests", params={"path": "/api/book"})
        response.raise_for_status()
        requests = response.json()["requests"]
        if len(requests) >= count:
            return requests
        if time.monotonic() > deadline:
            raise TimeoutError(f"The simulator received {len(requests)} of {count} booking requests within {WAIT_TIMEOUT_S} s")
        await asyncio.sleep(0.2)


async def run_backend(database: str, arguments: argparse.Namespace, paced_count: int, burst_count: int, logs: Path) -> dict:
    async with BenchServices(logs, database=database, nats_url=arguments.nats_url) as services:
        await services.start_simulator()
        await services.start_gateway()
        await services.start_executor()

        total = WARM_UP_COUNT + paced_count + burst_count
        paced_ms = int((WARM_UP_COUNT + paced_count) * PACED_INTERVAL_S * 1000)
        execute_at_ms = time.time_ns() // 1_000_000 + paced_ms + 5_000 + FIRE_MARGIN_MS
        users = [f"user{index}@bench.example.com" for index in range(total)]
        ids = await services.store_prebookings(users, class_id=CLASS_ID, class_day=CLASS_DAY, execute_at_ms=execute_at_ms)
        await services.register_sessions(users)
        async with httpx.AsyncClient(base_url=services.sim_url, timeout=30.0) as sim:
            gym_class = {"id": int(CLASS_ID), "day": CLASS_DAY.strftime("%Y%m%d"), "capacity": total, "opens_at_ms": execute_at_ms}
            (await sim.post("/_sim/classes", json=gym_class)).raise_for_status()

        phases = [
            Phase(f"first {WARM_UP_COUNT} after start, paced", ids[:WARM_UP_COUNT]),
            Phase("paced", ids[WARM_UP_COUNT : WARM_UP_COUNT + paced_count]),
            Phase("burst", ids[WARM_UP_COUNT + paced_count :]),
        ]
        executor_log = logs / "executor.log"
        async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
            await send_paced(client, services, phases[0], execute_at_ms)
            await wait_for_parked(executor_log, WARM_UP_COUNT)
            await send_paced(client, services, phases[1], execute_at_ms)
        await wait_for_parked(executor_log, WARM_UP_COUNT + paced_count)
        await send_burst(services, phases[2], execute_at_ms)

        parked = await wait_for_parked(executor_log, total)
        target_ns = execute_at_ms * 1_000_000
        for phase in phases:
            for prebooking_id in phase.ids:
                match = parked[str(prebooking_id)]
                parked_ns = target_ns - float(match["fires_ms"]) * 1e6
                total_ms = (parked_ns - int(match["received_ns"])) / 1e6
                phase.total_ms.append(total_ms)
                phase.to_handler_ms.append(total_ms - float(match["loaded_ms"]) - float(match["staged_ms"]))
                phase.loaded_ms.append(float(match["loaded_ms"]))
                phase.staged_ms.append(float(match["staged_ms"]))

        async with httpx.AsyncClient(base_url=services.sim_url, timeout=30.0) as sim:
            requests = await wait_for_bookings(sim, total)
        arrivals_ns = [request["arrival_ns"] - target_ns for request in requests]
        booked = sum(1 for request in requests if request["answer"].get("bookState") == 1)
        return {"phases": phases, "arrivals_ns": arrivals_ns, "booked": booked, "requests": len(requests)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the time from a QStash callback to a parked booking.")
    parser.add_argument("--quick", action="store_true", help="send 40 paced and 20 burst callbacks per database instead of 200 and 100")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres (default both)")
    parser.add_argument("--nats-url", help="use this NATS server (JetStream on) instead of starting nats-server")
    arguments = parser.parse_args()
    paced_count, burst_count = (40, 20) if arguments.quick else (200, 100)

    raise_fd_limit(8192)
    machine = Machine.read()
    print(f"Load average at start: {machine.describe_load()}")
    started = time.monotonic()
    rows = []
    fire_rows = []
    verdicts = []
    for database in arguments.databases.split(","):
        logs = log_dir(f"callback-to-parked-{database}")
        result = asyncio.run(run_backend(database, arguments, paced_count, burst_count, logs))
        for phase in result["phases"]:
            accepted = sum(status == 202 for status in phase.statuses)
            total = summarize(phase.total_ms)
            to_handler = summarize(phase.to_handler_ms)
            loaded = summarize(phase.loaded_ms)
            staged = summarize(phase.staged_ms)
            rows.append(
                [
                    database,
                    phase.name,
                    f"{accepted}/{len(phase.ids)}",
                    *total.cells(1, 1),
                    f"{to_handler.p50:.1f} / {to_handler.p99:.1f}",
                    f"{loaded.p50:.1f} / {loaded.p99:.1f}",
                    f"{staged.p50:.1f} / {staged.p99:.1f}",
                ]
            )
            print(f"{database} {phase.name}: callback to parked p50 {total.p50:.1f} ms p99 {total.p99:.1f} ms max {total.max:.1f} ms")
            if phase.name == "paced":
                if total.p99 <= TARGET_P99_MS:
                    verdicts.append(f"{database}: met (p99 {total.p99:.1f} ms ≤ {TARGET_P99_MS:g} ms)")
                else:
                    verdicts.append(
                        f"{database}: **not met** (p99 {total.p99:.1f} ms, {total.p99 - TARGET_P99_MS:.1f} ms over {TARGET_P99_MS:g} ms)"
                    )
        arrivals = summarize(result["arrivals_ns"])
        fire_rows.append([database, f"{result['requests']}", f"{result['booked']}", *arrivals.cells(1_000)])
        print(f"{database}: {result['requests']} bookings fired at one instant, arrival p50 {arrivals.p50 / 1000:.0f} us p99 {arrivals.p99 / 1000:.0f} us")
    elapsed_s = time.monotonic() - started
    print(f"Load average at the end: {Machine.read().describe_load()}")

    section = f"""## Callback to parked

Real processes: the simulator, the gateway and the executor (`python -m prebook.cli`,
INFO logging), a nats-server started by the benchmark, and a SQLite file or a fresh
Postgres database (127.0.0.1:5432). After {WARM_UP_COUNT} warm-up callbacks, reported apart,
{paced_count} prebookings get their callback paced, one every {PACED_INTERVAL_S * 1000:g} ms, and
then {burst_count} more get theirs in one burst (all sent at once over warm connections).
The time is the executor's parked instant minus the gateway's receive instant. Both come
from the executor's INFO line
`prebooking <id> parked: fires in F ms (received R, loaded in L ms, staged in S ms)`.
In it, R is `time.time_ns()` when the callback route started, and parked = target - F,
so a value is exact to 0.05 ms. The total splits into three parts. "Received → handler" is
the total minus L and S: the gateway's checks (signature, token, the prebooking's row),
the publish to JetStream and the pull by the executor. "Handler → loaded" (L) is the
executor's database reads, the claim and the session. "Loaded → parked" (S) is staging
the connections (1 + 3 spares) and the move to `firing`. All bookings then fire at one
instant.

{machine.markdown()}
- Command: `{command_line()}` ({elapsed_s:.0f} s)

{markdown_table(
    ["database", "callbacks", "202 / sent", "p50 ms", "p90 ms", "p99 ms", "max ms",
     "received → handler p50 / p99 ms", "handler → loaded p50 / p99 ms", "loaded → parked p50 / p99 ms"],
    rows,
)}

Target, callback to parked p99 ≤ {TARGET_P99_MS:g} ms for paced callbacks: {"; ".join(verdicts)}.

The same bookings at their shared instant (arrival at the simulator minus target):

{markdown_table(["database", "requests", "booked", "p50 µs", "p90 µs", "p99 µs", "max µs"], fire_rows)}
"""
    write_section("callback_to_parked", section)


if __name__ == "__main__":
    main()

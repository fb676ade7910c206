"""Fire latency: how long after its target instant a booking request reaches AimHarder.

Latency is the simulator's kernel receive stamp (SO_TIMESTAMPNS) of the segment that
completed the request, minus the target. The simulator runs as a separate process, so
its stamps are taken outside the measured process. Three methods run in one process,
round by round in turn, against simulator classes that open exactly at the target:

- staged: ``stage_request`` writes all of each request but its final byte, and one
  ``FireClock`` instant writes the final bytes back to back at the target.
- firer: the executor's ``Firer`` (``stage`` and ``fire``) on a ``BookRequest`` from
  ``build_book_request``, with the default settings, so each booking also stages its
  spare connections for "too early" retries.
- naive: ``asyncio.sleep`` until the target, then a POST on a warm ``httpx.AsyncClient``
  whose pool already has one open connection per booking.

Run: ``uv run python bench/fire_latency.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import httpx
from harness import Machine, command_line, log_dir, markdown_table, raise_fd_limit, start_simulator, summarize, write_section

from prebook_common.aimharder import BookAnswer, BookOutcome, BookRequest, build_book_request, parse_book_answer
from prebook_common.settings import Settings
from prebook_executor.fire_clock import FireClock
from prebook_executor.firing import Firer
from prebook_executor.staging import StagedRequest, stage_request

CLASS_ID = 4100
CLASS_DAY = date(2030, 1, 15)
USER = "bench@example.com"
COOKIE = "bench-cookie"

# Time from creating the round's class to its target. It is longer than the default
# guard window (10 ms), so each round sleeps first and spins only for the guard.
MARGIN_MS = 60
RESPONSE_TIMEOUT_S = 120.0
# Connections opened at once while staging or warming, so the simulator's accept queue
# (a listen backlog of 1,024) does not overflow.
CONNECT_CONCURRENCY = 200

TARGET_ONE_P50_US = 100
TARGET_ONE_P99_US = 300
TARGET_HUNDRED_P99_US = 2_000


@dataclass(frozen=True)
class Scenario:
    count: int
    rounds: int
    quick_rounds: int
    methods: tuple[str, ...]


SCENARIOS = (
    Scenario(1, 200, 20, ("staged", "firer", "naive")),
    Scenario(10, 30, 5, ("staged", "firer", "naive")),
    Scenario(100, 15, 4, ("staged", "firer", "naive")),
    # The Firer would stage 4,000 connections here (one spare per allowed retry), so the
    # thousand-booking instant compares the staged path with the naive one only.
    Scenario(1000, 2, 1, ("staged", "naive")),
)

METHOD_LABELS = {
    "staged": "staged (stage_request + FireClock)",
    "firer": "Firer (stage + fire, 3 spares each)",
    "naive": "naive (asyncio.sleep + warm httpx)",
}


@dataclass
class Fired:
    """One method's results for one round: each booking's parsed response and send time."""

    answers: list[BookAnswer]
    sent_ns: list[int | None]


class Method(Protocol):
    async def prepare(self, requests: list[BookRequest]) -> None: ...

    async def fire(self, target_ns: int) -> Fired: ...

    async def aclose(self) -> None: ...


async def gather_limited(coroutines: list, limit: int) -> list:
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine):
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(run(coroutine) for coroutine in coroutines))


class StagedMethod:
    def __init__(self, clock: FireClock, settings: Settings) -> None:
        self._clock = clock
        self._settings = settings
        self._staged: list[StagedRequest] = []

    async def prepare(self, requests: list[BookRequest]) -> None:
        self._staged = await gather_limited(
            [
                stage_request(
                    request.url,
                    headers=request.headers,
                    body=request.body,
                    connect_timeout_s=self._settings.connect_timeout_s,
                )
                for request in requests
            ],
            CONNECT_CONCURRENCY,
        )

    async def fire(self, target_ns: int) -> Fired:
        tickets = [self._clock.add(target_ns, staged) for staged in self._staged]
        outcomes = await asyncio.gather(*(ticket.outcome for ticket in tickets))
        responses = await asyncio.gather(*(staged.read_response(RESPONSE_TIMEOUT_S) for staged in self._staged))
        await self.aclose()
        return Fired(
            answers=[parse_book_answer(response.status_code, response.body) for response in responses],
            sent_ns=[outcome.sent_ns for outcome in outcomes],
        )

    async def aclose(self) -> None:
        await asyncio.gather(*(staged.aclose() for staged in self._staged))
        self._staged = []


class FirerMethod:
    def __init__(self, firer: Firer) -> None:
        self._firer = firer
        self._requests: list[BookRequest] = []
        self._staged: list[list[StagedRequest]] = []

    async def prepare(self, requests: list[BookRequest]) -> None:
        self._requests = requests
        # Each Firer.stage opens four connections, so a quarter as many run at once.
        self._staged = await gather_limited(
            [self._firer.stage(request, prebooking_id=f"bench-{index}") for index, request in enumerate(requests)],
            CONNECT_CONCURRENCY // 4,
        )

    async def fire(self, target_ns: int) -> Fired:
        results = await asyncio.gather(
            *(
                self._firer.fire(request, staged, target_ns, prebooking_id=f"bench-{index}")
                for index, (request, staged) in enumerate(zip(self._requests, self._staged))
            )
        )
        self._staged = []
        for result in results:
            if result.attempts != 1 or result.fallbacks != 0:
                raise RuntimeError(
                    f"Firer made {result.attempts} attempts with {result.fallbacks} fallbacks, "
                    f"expected 1 attempt on a staged connection (error: {result.error})"
                )
        return Fired(
            answers=[result.answer for result in results if result.answer is not None],
            sent_ns=[result.first_sent_ns for result in results],
        )

    async def aclose(self) -> None:
        for staged in self._staged:
            await self._firer.discard(staged)
        self._staged = []


class NaiveMethod:
    def __init__(self, sim_url: str, count: int) -> None:
        self._sim_url = sim_url
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        self._client = httpx.AsyncClient(limits=limits, timeout=RESPONSE_TIMEOUT_S)
        self._requests: list[BookRequest] = []
        self._count = count

    async def prepare(self, requests: list[BookRequest]) -> None:
        self._requests = requests
        # As many requests at once as there are bookings, so that the pool opens one
        # connection for each. Control requests are not recorded by the simulator.
        responses = await gather_limited(
            [self._client.get(f"{self._sim_url}/_sim/config") for _ in requests], self._count
        )
        for response in responses:
            response.raise_for_status()

    async def fire(self, target_ns: int) -> Fired:
        async def send(request: BookRequest) -> tuple[BookAnswer, int]:
            await asyncio.sleep(max(target_ns - time.time_ns(), 0) / 1e9)
            sent_ns = time.time_ns()
            response = await self._client.post(request.url, headers=request.headers, content=request.body)
            return parse_book_answer(response.status_code, response.content), sent_ns

        results = await asyncio.gather(*(send(request) for request in self._requests))
        return Fired(answers=[answer for answer, _ in results], sent_ns=[sent for _, sent in results])

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass
class Measured:
    """Samples of one method at one booking count, over all rounds."""

    rounds: int = 0
    arrival_ns: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    booked: int = 0
    bookings: int = 0
    # Per round: (last arrival - first arrival) / (bookings - 1), the cost of one more
    # booking at the instant.
    step_ns: list[float] = field(default_factory=list)


def book_requests(sim_url: str, count: int) -> list[BookRequest]:
    # One class, one session, and a family id per booking, so every booking is a
    # different person and each one books a place.
    return [
        build_book_request(
            sim_url,
            class_id=str(CLASS_ID),
            class_day=CLASS_DAY,
            insist=False,
            family_id=str(index),
            cookies={"amhrdrauth": COOKIE},
        )
        for index in range(count)
    ]


async def run_round(control: httpx.AsyncClient, method: Method, requests: list[BookRequest], measured: Measured) -> None:
    count = len(requests)
    (await control.post("/_sim/reset")).raise_for_status()
    (await control.post("/_sim/sessions", json={"user": USER, "cookie": COOKIE})).raise_for_status()

    await method.prepare(requests)

    target_ms = time.time_ns() // 1_000_000 + MARGIN_MS
    target_ns = target_ms * 1_000_000
    gym_class = {"id": CLASS_ID, "day": CLASS_DAY.strftime("%Y%m%d"), "capacity": count, "opens_at_ms": target_ms}
    (await control.post("/_sim/classes", json=gym_class)).raise_for_status()

    fired = await method.fire(target_ns)

    response = await control.get("/_sim/requests", params={"path": "/api/book"})
    response.raise_for_status()
    entries = response.json()["requests"]
    if len(entries) != count:
        raise RuntimeError(f"The simulator recorded {len(entries)} booking requests for {count} bookings")
    not_kernel = [entry["stamp_source"] for entry in entries if entry["stamp_source"] != "kernel"]
    if not_kernel:
        raise RuntimeError(f"{len(not_kernel)} arrival stamps are not kernel stamps, so latency would include the simulator")

    measured.rounds += 1
    measured.bookings += count
    measured.booked += sum(answer.outcome is BookOutcome.BOOKED for answer in fired.answers)
    arrivals = [entry["arrival_ns"] - target_ns for entry in entries]
    measured.arrival_ns += arrivals
    if count > 1:
        measured.step_ns.append((max(arrivals) - min(arrivals)) / (count - 1))
    measured.sent_ns += [sent - target_ns for sent in fired.sent_ns if sent is not None]


async def measure(sim_url: str, quick: bool) -> dict[int, dict[str, Measured]]:
    settings = Settings(_env_file=None)
    clock = FireClock(guard_ns=round(settings.guard_ms * 1_000_000))
    fallback_http = httpx.AsyncClient(timeout=settings.aimharder_timeout_s)
    firer = Firer(settings, clock, fallback_http)
    results: dict[int, dict[str, Measured]] = defaultdict(dict)

    async with httpx.AsyncClient(base_url=sim_url, timeout=30.0) as control:
        for scenario in SCENARIOS:
            rounds = scenario.quick_rounds if quick else scenario.rounds
            requests = book_requests(sim_url, scenario.count)
            methods: dict[str, Method] = {
                "staged": StagedMethod(clock, settings),
                "firer": FirerMethod(firer),
                "naive": NaiveMethod(sim_url, scenario.count),
            }
            started = time.monotonic()
            for name in scenario.methods:
                results[scenario.count][name] = Measured()
            # The methods take turns round by round, so a change in the machine's load
            # during the run affects all of them alike.
            for _ in range(rounds):
                for name in scenario.methods:
                    await run_round(control, methods[name], requests, results[scenario.count][name])
            for method in methods.values():
                await method.aclose()
            print(f"{scenario.count} at one instant: {rounds} rounds per method in {time.monotonic() - started:.1f} s")
            print_scenario(scenario.count, results[scenario.count])

    await clock.aclose()
    await fallback_http.aclose()
    return results


def print_scenario(count: int, by_method: dict[str, Measured]) -> None:
    for name, measured in by_method.items():
        summary = summarize(measured.arrival_ns)
        p50, p90, p99, maximum = summary.cells(1_000)
        print(
            f"  {METHOD_LABELS[name]:<40} n={summary.count:>6}  p50 {p50:>9} us  p90 {p90:>9} us  "
            f"p99 {p99:>9} us  max {maximum:>9} us  booked {measured.booked}/{measured.bookings}"
        )


def verdict(value_us: float, target_us: float) -> str:
    if value_us <= target_us:
        return f"met ({value_us:,.0f} µs ≤ {target_us:,} µs)"
    return f"**not met**: {value_us:,.0f} µs, {value_us - target_us:,.0f} µs over the {target_us:,} µs target"


def render(results: dict[int, dict[str, Measured]], machine: Machine, elapsed_s: float, settings: Settings) -> str:
    rows = []
    for count, by_method in results.items():
        staged = summarize(by_method["staged"].arrival_ns)
        for name, measured in by_method.items():
            summary = summarize(measured.arrival_ns)
            ratio = ""
            if name == "naive":
                ratio = f"{summary.p50 / staged.p50:,.0f}× / {summary.p99 / staged.p99:,.0f}×"
            rows.append(
                [
                    f"{count:,}",
                    METHOD_LABELS[name],
                    str(measured.rounds),
                    f"{summary.count:,}",
                    *summary.cells(1_000),
                    ratio,
                    f"{summarize(measured.step_ns).p50 / 1000:,.1f}" if measured.step_ns else "",
                    f"{measured.booked:,}/{measured.bookings:,}",
                ]
            )
    table = markdown_table(
        ["at one instant", "method", "rounds", "samples", "p50 µs", "p90 µs", "p99 µs", "max µs",
         "naive ÷ staged (p50 / p99)", "µs per extra booking", "booked"],
        rows,
    )

    sent_rows = []
    for count, by_method in results.items():
        for name in ("staged", "firer", "naive"):
            if name in by_method:
                sent_rows.append([f"{count:,}", METHOD_LABELS[name], *summarize(by_method[name].sent_ns).cells(1_000)])
    sent_table = markdown_table(["at one instant", "method", "p50 µs", "p90 µs", "p99 µs", "max µs"], sent_rows)

    one = {name: summarize(measured.arrival_ns) for name, measured in results[1].items()}
    hundred = {name: summarize(measured.arrival_ns) for name, measured in results.get(100, {}).items()}
    targets = [
        f"- One booking, p50 ≤ {TARGET_ONE_P50_US} µs: staged {verdict(one['staged'].p50 / 1000, TARGET_ONE_P50_US)}; "
        f"Firer {verdict(one['firer'].p50 / 1000, TARGET_ONE_P50_US)}.",
        f"- One booking, p99 ≤ {TARGET_ONE_P99_US} µs: staged {verdict(one['staged'].p99 / 1000, TARGET_ONE_P99_US)}; "
        f"Firer {verdict(one['firer'].p99 / 1000, TARGET_ONE_P99_US)}.",
    ]
    if hundred:
        targets.append(
            f"- 100 at one instant, p99 ≤ {TARGET_HUNDRED_P99_US:,} µs: staged "
            f"{verdict(hundred['staged'].p99 / 1000, TARGET_HUNDRED_P99_US)}; "
            f"Firer {verdict(hundred['firer'].p99 / 1000, TARGET_HUNDRED_P99_US)}."
        )

    return f"""## Fire latency

Latency is the simulator's kernel receive stamp of the segment that completed a booking
request, minus the target instant. The simulator is a separate process
(`python -m prebook_simulator`), and each round's class opens exactly at the target, so
the simulator books a request only if it arrived at or after the target. The three
methods take turns round by round in one process. **Staged** is `stage_request` plus one
`FireClock` instant: sleep until the guard window of {settings.guard_ms:g} ms, spin, then
write the final bytes back to back. **Firer** is the executor's `Firer.stage` and
`Firer.fire` on a request from `build_book_request`, with the default
{settings.too_early_retries} spare connections per booking. **Naive** is `asyncio.sleep`
until the target, then a POST on an `httpx.AsyncClient` whose pool already has one open
connection per booking. A round resets the simulator, stages or
warms the connections, creates the class {MARGIN_MS} ms before the target and fires.
Every percentile pools all bookings of all rounds. "µs per extra booking" is the median
over rounds of (last arrival - first arrival) / (bookings - 1).

{machine.markdown()}
- Command: `{command_line()}` ({elapsed_s:.0f} s)

{table}

Targets:

{chr(10).join(targets)}

Time from the target to the write as the sending process saw it (`time.time_ns()` just
before the final byte, or before `client.post` for naive):

{sent_table}
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description="Measure fire latency: staged requests against a naive httpx executor.")
    parser.add_argument("--quick", action="store_true", help="run a few rounds per scenario instead of the full set")
    arguments = parser.parse_args()

    # 1,000 bookings need 1,000 sockets here and as many in the simulator, which inherits the limit.
    raise_fd_limit(8192)
    machine = Machine.read()
    print(f"Load average at start: {machine.describe_load()}")
    logs = log_dir("fire-latency")
    simulator, sim_url = await start_simulator(logs)
    started = time.monotonic()
    try:
        results = await measure(sim_url, arguments.quick)
    finally:
        simulator.stop()
    elapsed_s = time.monotonic() - started
    print(f"Load average at the end: {Machine.read().describe_load()}")
    write_section("fire_latency", render(results, machine, elapsed_s, Settings(_env_file=None)))


if __name__ == "__main__":
    asyncio.run(main())

"""Prepare round trips: database round trips and thread hops of one executor prepare step.

The executor's own objects (``Executor(settings)``, without its NATS connection) claim,
load and stage stored prebookings, one at a time, against the simulator as a child
process and a SQLite file or a fresh Postgres database. Each prepare event comes with a
stand-in for the JetStream message that only counts acks. The benchmark counts the
calls of each prepare that cost one exchange with the database. On Postgres these are
the asyncpg calls that send a query (``execute``, ``fetchrow``, ``prepare`` and a
prepared statement's ``fetch``). On SQLite they are the calls that aiosqlite hands to
its connection's thread. The counts do not depend on the machine's load, but the times
printed beside them do.

Run: ``uv run python bench/prepare_round_trips.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import aiosqlite.core
import asyncpg.connection
import asyncpg.prepared_stmt
from harness import Machine, command_line, log_dir, markdown_table, start_simulator, summarize, write_section
from services import BOX, BOX_ID, DEFAULT_POSTGRES_URL
from sqlalchemy import insert

from prebook_common.crypto import SecretBox
from prebook_common.db import warm_pool
from prebook_common.events import PrebookingPrepare
from prebook_common.migrate import upgrade
from prebook_common.models import AimharderSession, Prebooking, PrebookingStatus, ms_to_datetime, utcnow
from prebook_common.settings import Settings
from prebook_executor.app import PREPARE_WORKERS, Executor
from support.databases import create_database, drop_database
from support.stack import CURRENT_KEY, ENCRYPTION_KEY, NEXT_KEY, TOKEN_SECRET

CLASS_ID = "7300"
CLASS_DAY = date(2030, 4, 1)
# The first prepares are left out, because they pay for compiling statements.
WARM_UP_COUNT = 5
# Pause between two prepares, so each one finds the event loop idle.
PACE_S = 0.01
TARGET_AHEAD_S = 120

# Each counted call is one exchange with the database server or with aiosqlite's thread.
COUNTED_CALLS = [
    (asyncpg.connection.Connection, "execute", "postgres"),
    (asyncpg.connection.Connection, "fetchrow", "postgres"),
    (asyncpg.connection.Connection, "prepare", "postgres"),
    (asyncpg.prepared_stmt.PreparedStatement, "fetch", "postgres"),
    (aiosqlite.core.Connection, "_execute", "sqlite"),
]


@dataclass
class _Sequence:
    stream: int


@dataclass
class _Metadata:
    sequence: _Sequence
    num_delivered: int = 1


@dataclass
class _RawMessage:
    metadata: _Metadata


class StandInMessage:
    """The parts of a FastStream NatsMessage that the prepare step uses."""

    def __init__(self, stream_seq: int) -> None:
        self.raw_message = _RawMessage(_Metadata(_Sequence(stream_seq)))
        self.acks = 0

    async def ack(self) -> None:
        self.acks += 1

    async def nack(self, delay: float | None = None) -> None:
        self.acks += 1

    async def in_progress(self) -> None:
        pass


def count_calls(counts: Counter[str]) -> Callable[[], None]:
    """Count every call listed in COUNTED_CALLS into ``counts``, and return a function that undoes it."""
    originals = []
    for owner, name, key in COUNTED_CALLS:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def counted(self, *args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(self, *args, **kwargs)

        setattr(owner, name, counted)

    def undo() -> None:
        for owner, name, original in originals:
            setattr(owner, name, original)

    return undo


async def store_prebookings(executor: Executor, count: int, execute_at_ms: int) -> list[uuid.UUID]:
    box = SecretBox(ENCRYPTION_KEY)
    now = utcnow()
    users = [f"user{index}@round-trips.example.com" for index in range(count)]
    ids = [uuid.uuid4() for _ in users]
    prebookings = [
        {
            "id": prebooking_id, "user_email": user, "box_subdomain": BOX, "box_aimharder_id": BOX_ID,
            "class_id": CLASS_ID, "class_day": CLASS_DAY, "insist": False, "execute_at": ms_to_datetime(execute_at_ms),
            "status": PrebookingStatus.SCHEDULED, "attempts": 0, "created_at": now, "updated_at": now,
        }
        for prebooking_id, user in zip(ids, users, strict=True)
    ]
    sessions = [
        {
            "user_email": user, "cookies_encrypted": box.encrypt_json({"amhrdrauth": f"cookie-{user}"}),
            "auto_relogin": False, "refresh_failures": 0, "refreshed_at": now, "created_at": now, "updated_at": now,
        }
        for user in users
    ]
    async with executor.engine.begin() as connection:
        await connection.execute(insert(Prebooking), prebookings)
        await connection.execute(insert(AimharderSession), sessions)
    return ids


async def run_backend(database: str, count: int, logs: Path) -> tuple[list[int], list[float]]:
    """Prepare ``count`` bookings one at a time, and return the counted calls and the time of each."""
    if database == "postgres":
        database_url = await create_database(DEFAULT_POSTGRES_URL)
    else:
        database_url = f"sqlite+aiosqlite:///{logs / 'prebook.db'}"
    simulator, sim_url = await start_simulator(logs)
    settings = Settings(
        _env_file=None, env="development", database_url=database_url, nats_url="nats://127.0.0.1:4222",
        public_url="http://gateway.invalid", token_secret=TOKEN_SECRET, qstash_current_signing_key=CURRENT_KEY,
        qstash_next_signing_key=NEXT_KEY, session_encryption_keys=ENCRYPTION_KEY, aimharder_base_url=sim_url,
        session_refresher_enabled=False,
    )
    executor = Executor(settings)
    try:
        await upgrade(executor.engine)
        await warm_pool(executor.prepare_engine, PREPARE_WORKERS)
        await executor.lease.start()
        execute_at_ms = time.time_ns() // 1_000_000 + TARGET_AHEAD_S * 1000
        ids = await store_prebookings(executor, WARM_UP_COUNT + count, execute_at_ms)

        counts: Counter[str] = Counter()
        undo = count_calls(counts)
        calls: list[int] = []
        times_ms: list[float] = []
        try:
            for index, prebooking_id in enumerate(ids):
                event = PrebookingPrepare(
                    prebooking_id=prebooking_id, box_subdomain=BOX, box_aimharder_id=BOX_ID, execute_at_ms=execute_at_ms,
                    qstash_message_id=f"msg_{index}", retried=0, received_at_ns=time.time_ns(),
                )
                counts.clear()
                started = time.perf_counter()
                await executor.handler(event, StandInMessage(index + 1))
                if index >= WARM_UP_COUNT:
                    times_ms.append((time.perf_counter() - started) * 1000)
                    calls.append(counts[database])
                await asyncio.sleep(PACE_S)
        finally:
            undo()
        parked = len(executor.handler._parked)
        if parked != len(ids):
            raise RuntimeError(f"only {parked} of {len(ids)} bookings were parked; see the warnings above")
        return calls, times_ms
    finally:
        executor.handler.stop_taking()
        await executor.handler.hand_back(margin_s=0.0)
        await executor.lease.stop()
        await executor.http.aclose()
        await executor.prepare_engine.dispose()
        await executor.engine.dispose()
        await asyncio.to_thread(simulator.stop)
        if database == "postgres":
            await drop_database(database_url, DEFAULT_POSTGRES_URL)


def main() -> None:
    parser = argparse.ArgumentParser(description="Count the database round trips of the executor's prepare step.")
    parser.add_argument("--quick", action="store_true", help="prepare 20 bookings per database instead of 100")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres (default both)")
    arguments = parser.parse_args()
    count = 20 if arguments.quick else 100

    machine = Machine.read()
    print(f"Load average at start: {machine.describe_load()}")
    rows = []
    for database in arguments.databases.split(","):
        logs = log_dir(f"prepare-round-trips-{database}")
        calls, times_ms = asyncio.run(run_backend(database, count, logs))
        unit = "round trips" if database == "postgres" else "thread hops"
        spread = summarize(calls)
        times = summarize(times_ms)
        print(f"{database}: {spread.p50:.0f} {unit} per prepare (max {spread.max:.0f}), prepare p50 {times.p50:.1f} ms p99 {times.p99:.1f} ms")
        rows.append([database, str(count), unit, f"{spread.p50:.0f}", f"{spread.max:.0f}", f"{times.p50:.1f}", f"{times.p99:.1f}"])

    section = f"""## Prepare round trips

The executor's objects, without NATS, prepare {count} stored bookings one at a time (after
{WARM_UP_COUNT} left out), with a stand-in for the JetStream message. Counted per prepare:
on Postgres the asyncpg calls that send a query, on SQLite the calls that aiosqlite
hands to its connection's thread. The counts do not depend on the machine's load, but
the times do.

{machine.markdown()}
- Command: `{command_line()}`

{markdown_table(["database", "prepares", "counted", "p50", "max", "prepare p50 ms", "prepare p99 ms"], rows)}
"""
    write_section("prepare_round_trips", section)


if __name__ == "__main__":
    main()

"""Helpers of the scheduler tests: settings, rows, events and in-process schedulers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import nats
from sqlalchemy import update
from sqlmodel import select

from prebook_common.db import create_engine, session_factory
from prebook_common.events import Event
from prebook_common.models import Prebooking, PrebookingStatus, Schedule, ms_to_datetime, utcnow
from prebook_common.settings import Settings
from prebook_common.streams import create_broker
from prebook_scheduler.app import DURABLE_PREFIX, Scheduler
from support.jetstream import NatsNames
from support.polling import eventually
from support.stack import BOX, BOX_ID, CURRENT_KEY, NEXT_KEY, TOKEN_SECRET

PUBLIC_URL = "https://prebook.example.com"
SIGNED_URL = PUBLIC_URL + "/v1/qstash/prepare"
LEAD_S = 1.0
POLL_INTERVAL_S = 0.1
# Upper bound of the waits for the scheduler to react to an event or a row.
WAIT_S = 20.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class PrebookingRows:
    """Prebooking and schedule rows of the test's database, read and written as the gateway would."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)
        self._sessions = session_factory(self.engine)

    async def add(
        self, execute_at_ms: int, *, status: PrebookingStatus = PrebookingStatus.PENDING, user: str = "ana@example.com"
    ) -> uuid.UUID:
        async with self._sessions() as session:
            prebooking = Prebooking(
                user_email=user,
                box_subdomain=BOX,
                box_aimharder_id=BOX_ID,
                class_id="7001",
                class_day=date.today() + timedelta(days=4),
                execute_at=ms_to_datetime(execute_at_ms),
                status=status,
            )
            session.add(prebooking)
            await session.commit()
            return prebooking.id

    async def add_schedule(self, schedule: Schedule) -> None:
        async with self._sessions() as session:
            session.add(schedule)
            await session.commit()

    async def prebooking(self, prebooking_id: uuid.UUID) -> Prebooking:
        async with self._sessions() as session:
            row = await session.get(Prebooking, prebooking_id)
            if row is None:
                raise AssertionError(f"prebooking {prebooking_id} is not in the database")
            return row

    async def schedule(self, prebooking_id: uuid.UUID) -> Schedule | None:
        async with self._sessions() as session:
            result = await session.exec(select(Schedule).where(Schedule.prebooking_id == prebooking_id))
            return result.first()

    async def update(self, prebooking_id: uuid.UUID, **values: Any) -> None:
        async with self._sessions() as session:
            await session.exec(
                update(Prebooking).where(Prebooking.id == prebooking_id).values(updated_at=utcnow(), **values)
            )
            await session.commit()

    async def wait_for_status(self, prebooking_id: uuid.UUID, status: PrebookingStatus) -> Prebooking:
        async def reached() -> Prebooking | None:
            row = await self.prebooking(prebooking_id)
            return row if row.status == status else None

        return await eventually(reached, timeout_s=WAIT_S, message=f"prebooking {prebooking_id} never became {status}")

    async def wait_for_schedule(self, prebooking_id: uuid.UUID, predicate: Callable[[Schedule], bool]) -> Schedule:
        async def matches() -> Schedule | None:
            row = await self.schedule(prebooking_id)
            return row if row is not None and predicate(row) else None

        return await eventually(
            matches, timeout_s=WAIT_S, message=f"schedule of prebooking {prebooking_id} never matched"
        )


class EventPublisher:
    """Publishes events to the test's stream, as the gateway does after its commit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = create_broker(settings)

    async def publish(self, event: Event) -> int:
        """Publish ``event`` and return its stream sequence."""
        ack = await self.broker.publish(
            event.to_bytes(), self.settings.subject(event.subject_name), stream=self.settings.nats_stream, timeout=5.0
        )
        return ack.seq

    async def wait_until_acked(self, event_name: str, seq: int) -> None:
        """Wait until the scheduler's consumer of ``event_name`` acknowledged stream sequence ``seq``."""
        client = await nats.connect(self.settings.nats_url)
        try:
            jetstream = client.jetstream()

            async def acked() -> bool:
                info = await jetstream.consumer_info(self.settings.nats_stream, f"{DURABLE_PREFIX}-{event_name}")
                return info.ack_floor.stream_seq >= seq

            await eventually(acked, timeout_s=WAIT_S, message=f"{event_name} event {seq} was never acknowledged")
        finally:
            await client.close()


def make_settings(nats_url: str, database_url: str, names: NatsNames, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "development",
        "database_url": database_url,
        "nats_url": nats_url,
        "nats_stream": names.stream,
        "nats_subject_prefix": names.subject_prefix,
        "token_secret": TOKEN_SECRET,
        "qstash_current_signing_key": CURRENT_KEY,
        "qstash_next_signing_key": NEXT_KEY,
        "public_url": PUBLIC_URL,
        "lead_s": LEAD_S,
        "scheduler_backend": "local",
        "scheduler_poll_interval_s": POLL_INTERVAL_S,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


class RunningSchedulers:
    """Schedulers started in the test's event loop, stopped at teardown."""

    def __init__(self) -> None:
        self._running: list[Scheduler] = []

    async def start(self, settings: Settings, *, owner: str | None = None) -> Scheduler:
        scheduler = Scheduler(settings, owner=owner)
        await scheduler.start()
        self._running.append(scheduler)
        return scheduler

    async def stop_all(self) -> None:
        while self._running:
            await self._running.pop().stop()
